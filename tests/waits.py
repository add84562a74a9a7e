"""Waiting, with a deadline, for what a uvicorn server under test has done (seen from outside)."""

from __future__ import annotations

import asyncio

import redis.asyncio

from events.backends.connection import channel_name

from .servers import UvicornServer
from .sse import SSEStream

DEADLINE = 10.0


async def subscribed(server: UvicornServer, topic: str, count: int = 1) -> None:
    """Wait until Redis counts ``count`` subscribers of ``topic`` (one per server process holding it)."""
    client = redis.asyncio.Redis.from_url(server.env["REDIS_URL"])
    channel = channel_name(topic, server.env["EVENTS_PREFIX"])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    try:
        while True:
            [(_, n)] = await client.pubsub_numsub(channel)
            if n >= count:
                return
            if loop.time() > deadline:
                raise AssertionError(f"{topic} had {n} subscribers, not {count}, after {DEADLINE} s")
            await asyncio.sleep(0.01)
    finally:
        await client.aclose()


async def opened(stream: SSEStream) -> None:
    """Wait until ``stream`` is attached to the hub, its topics subscribed in Redis.

    The first bytes (``retry:`` and a comment) come before any Redis work, so
    they prove nothing. A heartbeat comes only from the stream's main loop,
    which it enters once the hub has confirmed its subscriptions: after the
    first heartbeat, everything published on its topics reaches it. (Needs a
    short ``EVENTS_HEARTBEAT``, as the test servers have.)
    """
    first = await stream.next_frame()
    assert first is not None and first.get("retry") is not None, first
    while True:
        frame = await stream.next_frame()
        assert frame is not None, "the stream ended before its first heartbeat"
        assert not frame.is_event, f"an event before the first heartbeat: {frame}"
        if "heartbeat" in frame.comments:
            return
