"""Hostile clients and foreign data, against a real uvicorn worker and a real Redis.

Each test here reproduces an attack on a running worker: clients that leave at
once or never read, foreign messages in Redis, huge replays, ids at the edge
of what Redis can hold, malformed requests. The worker must stay correct and
bounded: slots, subscriptions, sockets and memory released; every error JSON.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from django.conf import settings
from django.test import override_settings

from events import publish
from events.connection import channel_name, close_sync_clients, history_key
from events.ids import parse_id

from .servers import RedisServer, UvicornServer, wait_for
from .sse import open_raw_stream, open_stream

MAX_ID = "18446744073709551615-18446744073709551615"

Private = tuple[RedisServer, UvicornServer]


@pytest.fixture
def private(own_redis: Callable[[], RedisServer], start_server: Callable[..., UvicornServer]) -> Iterator[Private]:
    """A redis-server of our own (foreign data, DEBUG SLEEP), a uvicorn on it, publish() pointed at it."""
    redis_server = own_redis()
    srv = start_server({"REDIS_URL": redis_server.url})
    with override_settings(EVENTS={**settings.EVENTS, "REDIS_URL": redis_server.url}):
        yield redis_server, srv
    close_sync_clients()


def metric(srv: UvicornServer, name: str) -> float:
    text = httpx.get(f"{srv.url}/events/metrics/", timeout=5).text
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"no metric {name}"
    return float(match.group(1))


def subscribed_channels(client: redis.Redis, srv: UvicornServer) -> list[str]:
    return [c.decode() for c in client.pubsub_channels(f"{srv.env['EVENTS_PREFIX']}:topic:*")]


def stream_url(srv: UvicornServer, topic: str, **params: str) -> str:
    query = "".join(f"&{name}={value}" for name, value in params.items())
    return f"{srv.url}/events/stream/?topic={topic}{query}"


def poll_url(srv: UvicornServer, topic: str, **params: str) -> str:
    query = "".join(f"&{name}={value}" for name, value in params.items())
    return f"{srv.url}/events/poll/?topic={topic}{query}"


def pause_redis(redis_server: RedisServer, seconds: float) -> None:
    """Hold every client's commands in Redis for ``seconds`` (widens race windows); returns at once."""
    with redis_server.client() as client:
        assert client.execute_command("CLIENT", "PAUSE", str(int(seconds * 1000)), "ALL")


# 1. Clients that close at once ---------------------------------------------


async def test_streams_whose_client_leaves_at_once_release_slot_and_subscription(
    private: Private, make_topic: Callable[[], str]
) -> None:
    redis_server, srv = private
    topics = [make_topic() for _ in range(100)]

    async def hit_and_run(topic: str, read_first: bool) -> None:
        stream = await open_raw_stream(stream_url(srv, topic))
        if read_first:
            await stream.read_until(b"stream open")
        await stream.close()

    # Half close before any answer, half after the first bytes (mid-subscribe).
    await asyncio.gather(*(hit_and_run(topic, i % 2 == 1) for i, topic in enumerate(topics)))

    with redis_server.client() as client:

        def all_released() -> bool:
            return metric(srv, "events_streams_open") == 0 and not subscribed_channels(client, srv)

        await asyncio.to_thread(wait_for, all_released, 5, "every slot and subscription to be released")


# 5. One waiter's cancellation must not cancel the others' ------------------


async def test_a_client_leaving_during_a_pending_subscribe_does_not_cut_another(private: Private, topic: str) -> None:
    redis_server, srv = private
    async with open_stream(stream_url(srv, "warmup")) as warm:
        await warm.next_frame()  # the hub is connected before Redis pauses
        await asyncio.to_thread(wait_for, lambda: metric(srv, "events_streams_open") == 1, 5, "warm-up stream")
    await asyncio.to_thread(wait_for, lambda: metric(srv, "events_streams_open") == 0, 5, "warm-up stream to close")
    pause_redis(redis_server, 2)
    first = await open_raw_stream(stream_url(srv, topic))
    async with open_stream(stream_url(srv, topic)) as second:
        await first.read_until(b"stream open")
        await second.next_frame()
        # Both are registered and wait for the same SUBSCRIBE confirmation.
        await asyncio.to_thread(wait_for, lambda: metric(srv, "events_streams_open") == 2, 5, "both attaching")
        await first.close()
        await asyncio.to_thread(wait_for, lambda: metric(srv, "events_streams_open") == 1, 5, "first released")
        # The pause ends; the second stream must be live, not cut.
        event_id = await asyncio.to_thread(publish, topic)
        frame = await second.next_event(timeout=10)
        assert frame.id == event_id
    assert "_GatheringFuture" not in srv.log()
