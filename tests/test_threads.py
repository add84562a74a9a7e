"""Open streams do not each hold a thread (Django keeps one per request otherwise)."""

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx

from .servers import UvicornServer, wait_for
from .sse import open_raw_stream

STREAMS = 100


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


async def test_threads_do_not_grow_with_open_streams(start_server: Callable[..., UvicornServer], topic: str) -> None:
    srv = start_server()
    streams = [await open_raw_stream(f"{srv.url}/events/stream/?topic={topic}") for _ in range(STREAMS)]
    try:
        await asyncio.gather(*(s.read_until(b"stream open") for s in streams))
        opened = lambda: httpx.get(f"{srv.url}/events/health/", timeout=5).json()["streams"] == STREAMS  # noqa: E731
        await asyncio.to_thread(wait_for, opened, 10, f"{STREAMS} streams")
        assert threads(srv.pid) < 20
    finally:
        for s in streams:
            await s.close()
