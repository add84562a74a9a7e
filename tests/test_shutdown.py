"""Prompt shutdown: on SIGTERM open streams end cleanly and the worker exits at once."""

import asyncio
import signal
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import httpx

from events import publish

from .servers import UvicornServer, wait_for
from .sse import open_raw_stream, open_stream, stop_and_read_to_end

STREAMS = 200


def health(server: UvicornServer) -> Any:
    return httpx.get(f"{server.url}/events/health/", timeout=5).json()


async def test_sigterm_ends_200_open_streams_cleanly_and_exits_within_3_seconds(
    start_server: Callable[..., UvicornServer], topic: str
) -> None:
    srv = start_server({"EVENTS_HEARTBEAT": "5"})
    streams = [await open_raw_stream(f"{srv.url}/events/stream/?topic={topic}") for _ in range(STREAMS)]
    try:
        await asyncio.gather(*(s.read_until(b"stream open") for s in streams))
        await asyncio.to_thread(wait_for, lambda: health(srv)["streams"] == STREAMS, 10, f"{STREAMS} streams")
        terminate = partial(srv.process.send_signal, signal.SIGTERM)
        bodies, elapsed = await stop_and_read_to_end(terminate, srv.process, streams, 3)
        assert elapsed < 3
        for body in bodies:
            # A closing comment with a retry hint, then the chunked body's normal end.
            assert b": closing: shutdown; reconnect\n\n" in body
            assert b"retry: " in body.split(b"stream open")[1]
    finally:
        for s in streams:
            await s.close()


async def test_sigterm_answers_a_waiting_long_poll_with_what_it_has(
    start_server: Callable[..., UvicornServer], topic: str
) -> None:
    srv = start_server({"EVENTS_LONGPOLL_TIMEOUT": "30"})
    since = await asyncio.to_thread(publish, topic)
    async with httpx.AsyncClient(timeout=10) as client:
        request = asyncio.create_task(client.get(f"{srv.url}/events/poll/?topic={topic}&since={since}"))
        await asyncio.to_thread(wait_for, lambda: health(srv)["polls"] == 1, 10, "the poll to wait")
        srv.process.send_signal(signal.SIGTERM)
        response = await asyncio.wait_for(request, 3)
    assert response.status_code == 200
    assert response.json() == {"events": [], "last_id": since}


async def test_streams_end_cleanly_at_their_maximum_age(start_server: Callable[..., UvicornServer], topic: str) -> None:
    srv = start_server({"EVENTS_MAX_STREAM_AGE": "0.5", "EVENTS_HEARTBEAT": "0.1"})
    async with open_stream(f"{srv.url}/events/stream/?topic={topic}") as stream:
        frames = await stream.until_end(timeout=5)
    assert any("closing: max-age; reconnect" in c for f in frames for c in f.comments)
    assert stream.ended


async def test_sigterm_drains_streams_at_drain_rate_with_heartbeats_meanwhile(
    start_server: Callable[..., UvicornServer], topic: str
) -> None:
    """40 streams at DRAIN_RATE 20 end over about 2 s, not at once; the last ones keep their heartbeats."""
    srv = start_server(
        {"EVENTS_DRAIN_RATE": "20", "EVENTS_HEARTBEAT": "0.1"}, args=["--timeout-graceful-shutdown", "20"]
    )
    streams = [await open_raw_stream(f"{srv.url}/events/stream/?topic={topic}") for _ in range(40)]
    since = await asyncio.to_thread(publish, topic)
    async with httpx.AsyncClient(timeout=10) as client:
        try:
            await asyncio.gather(*(s.read_until(b"stream open") for s in streams))
            await asyncio.to_thread(wait_for, lambda: health(srv)["streams"] == 40, 10, "40 streams")
            poll = asyncio.create_task(client.get(f"{srv.url}/events/poll/?topic={topic}&since={since}"))
            await asyncio.to_thread(wait_for, lambda: health(srv)["polls"] == 1, 10, "the poll to wait")
            started = time.monotonic()
            srv.process.send_signal(signal.SIGTERM)
            answer = await asyncio.wait_for(poll, 3)
            assert time.monotonic() - started < 1, "a waiting long-poll is answered at once"
            assert answer.json() == {"events": [], "last_id": since}

            async def ended(stream: Any) -> tuple[float, int]:
                body = await stream.read_to_end(timeout=10)
                assert b": closing: shutdown; reconnect\n\n" in body
                return time.monotonic() - started, body.count(b": heartbeat")

            ends = sorted(await asyncio.gather(*(ended(s) for s in streams)))
            await asyncio.to_thread(srv.process.wait, 5)
            # Spread over about 40 / 20 = 2 s: neither all at once nor stalled.
            assert ends[0][0] < 0.5 and 1.2 < ends[-1][0] < 6, ends
            # The last ones kept their heartbeats (every 0.1 s) while the others ended.
            assert ends[-1][1] - ends[0][1] >= 5, ends
        finally:
            for s in streams:
                await s.close()
