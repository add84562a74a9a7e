"""Every common ASGI server, same guarantees: streams, heartbeats, long-poll, prompt clean shutdown.

Each server runs the project (``project.asgi:application``) as a subprocess
over TCP, exactly as its documentation says to start it. With 200 open
streams, the server's stop signal must give every stream its closing comment
and a clean end of body, and the process must exit within 3 s, with no
traceback and no warning in its log.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from functools import partial

import httpx
import pytest

from events import apublish

from .conftest import SERVER_ENV
from .servers import free_port, metric, start_uvicorn, wait_for
from .sse import open_raw_stream, open_stream, stop_and_read_to_end

pytestmark = pytest.mark.timeout(120)

STREAMS = 200
APP = "project.asgi:application"
BIN = f"{sys.prefix}/bin"

Command = Callable[[int], list[str]]

SERVERS: dict[str, Command] = {
    "uvicorn": lambda port: [
        f"{BIN}/uvicorn", APP, "--host", "127.0.0.1", "--port", str(port), "--lifespan", "on",
        "--timeout-graceful-shutdown", "5", "--no-access-log",
    ],
    "gunicorn": lambda port: [
        f"{BIN}/gunicorn", "-k", "uvicorn_worker.UvicornWorker", APP, "--bind", f"127.0.0.1:{port}",
        "--workers", "1", "--graceful-timeout", "10",
    ],
    "granian": lambda port: [
        f"{BIN}/granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--no-ws", APP,
    ],
    "hypercorn": lambda port: [f"{BIN}/hypercorn", APP, "--bind", f"127.0.0.1:{port}"],
    "daphne": lambda port: [f"{BIN}/daphne", "-b", "127.0.0.1", "-p", str(port), APP],
}  # fmt: skip

# (server, stop signal): SIGTERM for each; gunicorn's master also takes SIGINT and SIGQUIT.
STOPS = [
    *((name, signal.SIGTERM) for name in SERVERS),
    ("gunicorn", signal.SIGINT),
    ("gunicorn", signal.SIGQUIT),
]


def health(url: str) -> dict[str, int]:
    response = httpx.get(f"{url}/events/health/", timeout=5)
    result: dict[str, int] = response.json()
    return result


@pytest.mark.parametrize(("name", "stop"), STOPS, ids=[f"{n}-{s.name}" for n, s in STOPS])
async def test_streams_poll_and_prompt_clean_shutdown(
    name: str, stop: signal.Signals, redis_url: str, events_prefix: str, topic: str
) -> None:
    port = free_port()
    env = {"REDIS_URL": redis_url, "EVENTS_PREFIX": events_prefix, **SERVER_ENV, "EVENTS_HEARTBEAT": "0.3"}
    with start_uvicorn(env, port=port, command=SERVERS[name](port)) as srv:
        # Streams: an event and heartbeats; long-poll: an answer.
        async with open_stream(f"{srv.url}/events/stream/?topic={topic}") as stream:
            await asyncio.to_thread(wait_for, lambda: health(srv.url)["streams"] == 1, 10, "the stream to attach")
            event_id = await apublish(topic, {"n": 1})
            frame = await stream.next_event(timeout=10)
            assert (frame.id, frame.json) == (event_id, {"topic": topic, "data": {"n": 1}})
        async with httpx.AsyncClient(timeout=10) as client:
            poll = await client.get(f"{srv.url}/events/poll/?topic={topic}&since={event_id}")
            assert poll.status_code == 200, poll.text
            assert poll.json() == {"events": [], "last_id": event_id}
        # Served without a Django request only where that was measured: uvicorn's httptools.
        direct = [metric(srv, f"events_{kind}_direct_total") for kind in ("streams", "polls")]
        assert direct == ([1, 1] if name in ("uvicorn", "gunicorn") else [0, 0])

        streams = [await open_raw_stream(f"{srv.url}/events/stream/?topic={topic}") for _ in range(STREAMS)]
        try:
            await asyncio.gather(*(s.read_until(b"stream open", timeout=20) for s in streams))
            await asyncio.to_thread(
                wait_for, lambda: health(srv.url)["streams"] == STREAMS, 20, f"{STREAMS} streams to attach"
            )
            # A heartbeat comment on an open stream.
            await streams[0].read_until(b": heartbeat", timeout=5)
            bodies, elapsed = await stop_and_read_to_end(
                partial(srv.process.send_signal, stop), srv.process, streams, 3
            )
        finally:
            for s in streams:
                await s.close()
        log = srv.log()
    assert elapsed < 3, log
    for body in bodies:
        assert b": closing: shutdown; reconnect\n\n" in body, body[-300:]
    assert "Traceback" not in log, log
    assert "cannot find the connection" not in log, log
    assert "WARNING" not in log and " ERROR " not in log, log
