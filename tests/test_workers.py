"""Many workers and hosts on one Redis: every client gets every event exactly once."""

import asyncio
from collections import Counter
from collections.abc import Callable

import httpx
import redis

from events import publish

from .servers import UvicornServer, wait_for
from .sse import RawStream, open_raw_stream

EVENTS = 20


def streams_open(server: UvicornServer) -> int:
    return int(httpx.get(f"{server.url}/events/health/", timeout=5).json()["streams"])


async def publish_and_check_each_received_once(streams: list[RawStream], topic: str, opened_at: str = "") -> None:
    """Publish, then check every stream got every event once (``opened_at``: the id its ``open`` event named)."""
    ids = [await asyncio.to_thread(publish, topic, data=i) for i in range(EVENTS)]
    await asyncio.gather(*(s.read_until(f"id: {ids[-1]}\n".encode()) for s in streams))
    for s in streams:
        seen = Counter(line[4:].decode() for line in s.data.split(b"\n") if line.startswith(b"id: "))
        seen.pop(opened_at, None)
        assert seen == Counter(ids), "an event was lost or duplicated"


async def test_two_workers_deliver_each_event_once_to_every_client(
    start_server: Callable[..., UvicornServer], topic: str, redis_client: redis.Redis
) -> None:
    from events.backends.connection import channel_name

    srv = start_server(args=["--workers", "2"])
    channel = channel_name(topic, srv.env["EVENTS_PREFIX"])
    # Streams resume from here, so none can miss an event while it attaches.
    start = await asyncio.to_thread(publish, topic)
    streams = []
    try:
        # Which worker accepts a connection is up to the kernel (and the
        # second may still be starting): open bursts of connections until
        # both workers' hubs have subscribed. ``event: open`` comes once a
        # stream is attached, its topic subscribed in Redis.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while redis_client.pubsub_numsub(channel)[0][1] < 2:
            assert loop.time() < deadline, "the kernel never gave the second worker a connection"
            url = f"{srv.url}/events/stream/?topic={topic}&open_event=1"
            burst = await asyncio.gather(*(open_raw_stream(url, {"Last-Event-ID": start}) for _ in range(10)))
            streams += burst
            await asyncio.gather(*(s.read_until(b"event: open") for s in burst))
        await publish_and_check_each_received_once(streams, topic, opened_at=start)
    finally:
        for s in streams:
            await s.close()


async def test_separate_instances_deliver_each_event_once_to_every_client(
    start_server: Callable[..., UvicornServer], topic: str, redis_client: redis.Redis
) -> None:
    one, two = start_server(), start_server()
    start = await asyncio.to_thread(publish, topic)
    urls = [f"{srv.url}/events/stream/?topic={topic}" for srv in (one, two) for _ in range(5)]
    streams = [await open_raw_stream(url, {"Last-Event-ID": start}) for url in urls]
    try:
        await asyncio.gather(*(s.read_until(b"stream open") for s in streams))
        for srv in (one, two):
            await asyncio.to_thread(wait_for, lambda srv=srv: streams_open(srv) == 5, 10, "streams attached")
        await publish_and_check_each_received_once(streams, topic)
    finally:
        for s in streams:
            await s.close()
