"""Overload: a publish burst must not stop the worker; memory is bounded in bytes; quiet topics are cheap.

Real uvicorn workers, real Redis, real sockets. The bounds are generous (a
loaded 2-core machine must not make them flake) and still fail on a hub that
writes every event of a burst to every socket without yielding (there,
health took 6-8 s to answer and the event after the burst arrived 6-11 s late).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable

import httpx

from events import publish

from .servers import UvicornServer, wait_for
from .sse import RawStream, open_raw_stream

STREAMS = 1000
BURST = 500
# Targets are 1 s (health, other topic) and 3 s (the event after the burst);
# these bounds leave room for a loaded machine and still fail the old hub.
HEALTH_BOUND = 3.0
OTHER_TOPIC_BOUND = 3.0
AFTER_BURST_BOUND = 5.0


def streams_open(srv: UvicornServer) -> int:
    return int(httpx.get(f"{srv.url}/events/health/", timeout=10).json()["streams"])


class Watcher:
    """Reads one raw stream to its end, noting when a marker first arrives."""

    def __init__(self, stream: RawStream, marker: bytes) -> None:
        self.stream = stream
        self.marker = marker
        self.seen_at: float | None = None
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        tail = b""
        while True:
            chunk = await self.stream.reader.read(65536)
            if not chunk:
                return
            window = tail + chunk
            if self.seen_at is None and self.marker in window:
                self.seen_at = time.monotonic()
            tail = window[-len(self.marker) :]

    async def close(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except (asyncio.CancelledError, ConnectionError):
            pass
        await self.stream.close()


class HealthProbe(threading.Thread):
    """Asks for health every 50 ms from its own thread; keeps the slowest answer's time."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.slowest = 0.0
        self.answers = 0
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.done.is_set():
                started = time.monotonic()
                try:
                    status = client.get(self.url).status_code
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    status = 0
                elapsed = time.monotonic() - started
                self.slowest = max(self.slowest, elapsed)
                self.answers += 1
                if status != 200:
                    self.failures.append(f"status {status}")
                self.done.wait(0.05)


async def test_a_burst_does_not_stop_the_worker(
    start_server: Callable[..., UvicornServer], make_topic: Callable[[], str]
) -> None:
    srv = start_server({"EVENTS_HEARTBEAT": "1"})
    busy, other = make_topic(), make_topic()
    final = f"final-{uuid.uuid4().hex}"
    elsewhere = f"elsewhere-{uuid.uuid4().hex}"
    watchers: list[Watcher] = []
    probe = HealthProbe(f"{srv.url}/events/health/")
    try:
        for _ in range(STREAMS):
            stream = await open_raw_stream(f"{srv.url}/events/stream/?topic={busy}")
            watchers.append(Watcher(stream, final.encode()))
        lone = Watcher(await open_raw_stream(f"{srv.url}/events/stream/?topic={other}"), elsewhere.encode())
        await asyncio.to_thread(wait_for, lambda: streams_open(srv) == STREAMS + 1, 60, "every stream attached")
        probe.start()

        published: dict[str, float] = {}

        def burst() -> None:
            # What a publish_changes on a bulk save does: publish() in a loop.
            for number in range(BURST):
                publish(busy, data={"n": number})
                if number == BURST // 2:
                    published["other"] = time.monotonic()
                    publish(other, data=elsewhere)
            published["final"] = time.monotonic()
            publish(busy, data=final)

        await asyncio.to_thread(burst)

        def all_seen() -> bool:
            return lone.seen_at is not None and all(watcher.seen_at is not None for watcher in watchers)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not all_seen() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        probe.done.set()
        await asyncio.to_thread(probe.join, 30)

        missing = sum(watcher.seen_at is None for watcher in watchers)
        assert missing == 0 and lone.seen_at is not None, f"{missing} streams never got the last event"
        last_arrival = max(watcher.seen_at or 0.0 for watcher in watchers) - published["final"]
        other_delay = lone.seen_at - published["other"]
        assert not probe.failures, probe.failures[:5]
        assert probe.answers > 0
        assert probe.slowest < HEALTH_BOUND, f"health took {probe.slowest:.2f} s during the burst"
        assert other_delay < OTHER_TOPIC_BOUND, f"the other topic's event arrived {other_delay:.2f} s late"
        assert last_arrival < AFTER_BURST_BOUND, f"the event after the burst took {last_arrival:.2f} s"
        print(
            f"health slowest {probe.slowest:.3f} s; other topic {other_delay:.3f} s; "
            f"after the burst {last_arrival:.3f} s"
        )
    finally:
        probe.done.set()
        for watcher in watchers:
            await watcher.close()
        if "lone" in locals():
            await lone.close()
