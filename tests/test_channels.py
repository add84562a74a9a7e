"""A Channels site: websocket consumers and event streams in one ASGI application, under three servers.

``tests/channels_site/asgi.py`` is the documented ``ProtocolTypeRouter`` (the
events app as its ``"http"`` and ``"lifespan"`` entries). Under uvicorn with
``--lifespan on``, gunicorn's uvicorn worker and daphne: lifespan is handled
(or, under daphne, not needed), a real websocket consumer answers, a stream
delivers, and the stop signal ends the open stream cleanly and promptly.
"""

from __future__ import annotations

import asyncio
import signal
from functools import partial

import pytest
import websockets

from events import apublish

from .conftest import SERVER_ENV
from .servers import free_port, start_uvicorn, wait_for
from .sse import open_raw_stream, open_stream, stop_and_read_to_end
from .test_servers import BIN, health

pytestmark = pytest.mark.timeout(60)

APP = "tests.channels_site.asgi:application"

SERVERS = {
    "uvicorn": lambda port: [
        f"{BIN}/uvicorn", APP, "--host", "127.0.0.1", "--port", str(port), "--lifespan", "on",
        "--timeout-graceful-shutdown", "5",
    ],
    "gunicorn": lambda port: [
        f"{BIN}/gunicorn", "-k", "uvicorn_worker.UvicornWorker", APP, "--bind", f"127.0.0.1:{port}",
        "--workers", "1", "--graceful-timeout", "10",
    ],
    "daphne": lambda port: [f"{BIN}/daphne", "-b", "127.0.0.1", "-p", str(port), APP],
}  # fmt: skip


@pytest.mark.parametrize("name", list(SERVERS))
async def test_websockets_and_streams_in_one_process(name: str, redis_url: str, events_prefix: str, topic: str) -> None:
    port = free_port()
    env = {"REDIS_URL": redis_url, "EVENTS_PREFIX": events_prefix, **SERVER_ENV}
    with start_uvicorn(env, port=port, command=SERVERS[name](port)) as srv:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/echo/") as websocket:
            await websocket.send("hello")
            assert await asyncio.wait_for(websocket.recv(), 5) == "echo: hello"
            async with open_stream(f"{srv.url}/events/stream/?topic={topic}") as stream:
                await asyncio.to_thread(wait_for, lambda: health(srv.url)["streams"] == 1, 10, "the stream")
                event_id = await apublish(topic)
                assert (await stream.next_event(timeout=10)).id == event_id

            open_one = await open_raw_stream(f"{srv.url}/events/stream/?topic={topic}")
            try:
                await open_one.read_until(b"stream open")
                await asyncio.to_thread(wait_for, lambda: health(srv.url)["streams"] == 1, 10, "the stream")
                terminate = partial(srv.process.send_signal, signal.SIGTERM)
                (body,), elapsed = await stop_and_read_to_end(terminate, srv.process, [open_one], 3)
            finally:
                await open_one.close()
        log = srv.log()
    assert b": closing: shutdown; reconnect\n\n" in body
    assert elapsed < 3, log
    assert "Traceback" not in log, log
    assert "No application configured" not in log, log
    if name != "daphne":  # daphne sends no lifespan
        assert "Application startup complete" in log or "startup complete" in log.lower(), log


async def test_runserver_serves_the_channels_application(redis_url: str, events_prefix: str, topic: str) -> None:
    """``manage.py runserver`` reads ASGI_APPLICATION: websockets and streams in development too."""
    from .runserver import ctrl_c_ends_streams_cleanly, start_runserver

    env = {
        "REDIS_URL": redis_url, "EVENTS_PREFIX": events_prefix, "DJANGO_DEBUG": "1",
        "DJANGO_SETTINGS_MODULE": "tests.settings_channels", **SERVER_ENV,
    }  # fmt: skip
    with start_runserver(env) as server:
        port = server.url.rsplit(":", 1)[1]
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/echo/") as websocket:
            await websocket.send("dev")
            assert await asyncio.wait_for(websocket.recv(), 5) == "echo: dev"
        await ctrl_c_ends_streams_cleanly(server, topic)
        log = server.log()
    assert "Traceback" not in log, log
