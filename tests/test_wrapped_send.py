"""An ASGI middleware wrapping ``send`` gets the plain path: its ``send`` is called from the request's task only."""

from __future__ import annotations

import asyncio
import sys

from events import apublish

from .conftest import SERVER_ENV
from .servers import free_port, start_uvicorn, wait_for
from .sse import open_stream
from .test_servers import health


async def test_a_wrapped_send_is_only_called_from_the_requests_own_task(
    redis_url: str, events_prefix: str, topic: str
) -> None:
    port = free_port()
    env = {"REDIS_URL": redis_url, "EVENTS_PREFIX": events_prefix, **SERVER_ENV}
    command = [
        sys.executable, "-m", "uvicorn", "tests.wrapped_asgi:application", "--host", "127.0.0.1", "--port", str(port),
        "--lifespan", "on", "--loop", "uvloop", "--http", "httptools", "--timeout-graceful-shutdown", "5",
    ]  # fmt: skip
    with start_uvicorn(env, port=port, command=command) as srv:
        async with open_stream(f"{srv.url}/events/stream/?topic={topic}") as stream:
            await asyncio.to_thread(wait_for, lambda: health(srv.url)["streams"] == 1, 10, "the stream to attach")
            sent = []
            # Live events (what the hub would write directly under uvicorn's own send).
            for n in range(5):
                sent.append(await apublish(topic, {"n": n}))
                received = await stream.next_event(timeout=10)
                assert received.id == sent[-1]
        log = srv.log()
    assert "another task's context" not in log, log
