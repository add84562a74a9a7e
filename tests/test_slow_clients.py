"""Slow and stuck clients: bounded memory, no delay for others, released after the write timeout."""

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx

from events import publish
from events.core.ids import parse_id

from .servers import UvicornServer, wait_for
from .sse import open_raw_stream, open_stream

EVENTS = 10_000
PAYLOAD = "x" * 2000  # 10,000 x 2 KB: 20 MB that an unbounded queue would keep


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def streams_open(srv: UvicornServer) -> int:
    return int(httpx.get(f"{srv.url}/events/health/", timeout=5).json()["streams"])


async def test_a_client_that_never_reads_costs_bounded_memory_and_delays_nobody(
    start_server: Callable[..., UvicornServer], topic: str
) -> None:
    srv = start_server({"EVENTS_WRITE_TIMEOUT": "3", "EVENTS_HEARTBEAT": "0.2"})
    stuck = await open_raw_stream(f"{srv.url}/events/stream/?topic={topic}", buffer=4096)
    try:
        await stuck.read_until(b"stream open")
        async with open_stream(f"{srv.url}/events/stream/?topic={topic}") as reader:
            await reader.next_frame()
            await asyncio.to_thread(wait_for, lambda: streams_open(srv) == 2, 10, "both streams attached")
            before = rss_bytes(srv.pid)

            published: list[str] = []

            def publish_all() -> None:
                published.extend(publish(topic, data=PAYLOAD) for _ in range(EVENTS))

            async def read_all() -> list[str]:
                ids = []
                while (frame := await reader.next_event(timeout=10)).json["data"] != "end":
                    assert frame.id is not None
                    ids.append(frame.id)
                return ids

            # A worker that falls behind merges invalidations (docs/howto/overload.md):
            # the reader gets events in order, up to the newest, without waiting for the stuck one.
            received = asyncio.ensure_future(read_all())
            await asyncio.to_thread(publish_all)
            await asyncio.to_thread(publish, topic, data="end", event="end")
            ids = await received
            assert ids == sorted(set(ids), key=parse_id)
            assert set(ids) <= set(published)
            growth = rss_bytes(srv.pid) - before
            assert growth < 10 * 1024 * 1024, f"server RSS grew by {growth / 1e6:.1f} MB"

            # The stuck stream is given up after the write timeout; the reader stays.
            await asyncio.to_thread(wait_for, lambda: streams_open(srv) == 1, 15, "the stuck stream to be released")
            follow = await asyncio.to_thread(publish, topic, data="still live")
            assert (await reader.next_event()).id == follow
    finally:
        await stuck.close()
