"""Served by Django's stock ``get_asgi_application()``, the endpoints answer and the log says, once, what is lost."""

import asyncio
import sys
from collections.abc import Callable

import httpx

from events import publish

from .conftest import SERVER_ENV
from .servers import UvicornServer, free_port, start_uvicorn
from .sse import open_stream
from .waits import subscribed


def uvicorn_command(app: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
        "--timeout-graceful-shutdown", "1", "--no-access-log",
    ]  # fmt: skip


async def test_stock_asgi_app_logs_one_warning_naming_events_asgi_app(
    redis_url: str, events_prefix: str, topic: str
) -> None:
    env = {"REDIS_URL": redis_url, "EVENTS_PREFIX": events_prefix, **SERVER_ENV}
    port = free_port()
    with start_uvicorn(env, port=port, command=uvicorn_command("tests.stock_asgi:application", port)) as srv:
        for _ in range(2):
            # Resuming from an id: the event arrives whether or not the stream
            # had subscribed when it was published.
            since = await asyncio.to_thread(publish, topic)
            async with open_stream(f"{srv.url}/events/stream/?topic={topic}&last_event_id={since}") as stream:
                newest = await asyncio.to_thread(publish, topic)
                assert (await stream.next_event(timeout=10)).id == newest
        async with httpx.AsyncClient(timeout=10) as client:
            newest = await asyncio.to_thread(publish, topic)
            response = await client.get(f"{srv.url}/events/poll/?topic={topic}&since=0-0")
            assert response.status_code == 200
            assert response.json()["last_id"] == newest
            # A poll that waits: its answer, known only later, is streamed by Django.
            waiting = asyncio.ensure_future(client.get(f"{srv.url}/events/poll/?topic={topic}&since={newest}"))
            await subscribed(srv, topic)
            later = await asyncio.to_thread(publish, topic)
            response = await asyncio.wait_for(waiting, 10)
            assert response.status_code == 200
            assert [event["id"] for event in response.json()["events"]] == [later]
        log = srv.log()
    warnings = [line for line in log.splitlines() if "events_asgi_app" in line]
    assert len(warnings) == 1, log
    (warning,) = warnings
    assert "events.asgi.events_asgi_app()" in warning
    for lost in ("shutdown", "thread", "lifespan"):
        assert lost in warning


async def test_events_asgi_app_logs_no_such_warning(start_server: Callable[..., UvicornServer], topic: str) -> None:
    srv = start_server()
    async with open_stream(f"{srv.url}/events/stream/?topic={topic}") as stream:
        await stream.next_frame()
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"{srv.url}/events/poll/?topic={topic}&since=0-0")).status_code == 200
    assert "events_asgi_app" not in srv.log()
