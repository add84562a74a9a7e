"""Redis faults: streams survive an outage, nothing published while Redis was up is lost.

These tests stop, restart or disconnect Redis, so each starts its own
redis-server on a free port and a uvicorn server pointed at it.
"""

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.test import override_settings

from events import PublishError, publish

from .servers import RedisServer, UvicornServer, wait_for
from .sse import open_stream


@pytest.fixture
def private(
    own_redis: Callable[[], RedisServer], start_server: Callable[..., UvicornServer], make_topic: Callable[[], str]
) -> Iterator[tuple[RedisServer, UvicornServer]]:
    """A redis-server of our own, a uvicorn on it, and publish() pointed at it."""
    redis_server = own_redis()
    srv = start_server({"REDIS_URL": redis_server.url})
    with override_settings(EVENTS={**settings.EVENTS, "REDIS_URL": redis_server.url}):
        yield redis_server, srv
    from events.backends.connection import close_sync_clients

    close_sync_clients()


def health(srv: UvicornServer) -> Any:
    return httpx.get(f"{srv.url}/events/health/", timeout=5).json()


def hub_is(srv: UvicornServer, state: str) -> Callable[[], bool]:
    return lambda: health(srv)["hub"] == state


async def test_streams_stay_open_with_heartbeats_through_a_redis_restart(
    private: tuple[RedisServer, UvicornServer], topic: str
) -> None:
    redis_server, srv = private
    async with open_stream(f"{srv.url}/events/stream/?topic={topic}") as stream:
        await stream.next_frame()
        first = await asyncio.to_thread(publish, topic)
        assert (await stream.next_event()).id == first

        redis_server.stop()
        await asyncio.to_thread(wait_for, hub_is(srv, "disconnected"), 10, "the hub to notice")
        # Heartbeats go on during the outage.
        beats = 0
        while beats < 3:
            frame = await stream.next_frame(timeout=1)
            assert frame is not None, "the stream ended during the outage"
            beats += "heartbeat" in frame.comments
        # publish() fails fast and clearly meanwhile.
        started = time.monotonic()
        with pytest.raises(PublishError):
            await asyncio.to_thread(publish, topic)
        assert time.monotonic() - started < 5

        redis_server.start()
        await asyncio.to_thread(wait_for, hub_is(srv, "connected"), 15, "the hub to reconnect")
        after = await asyncio.to_thread(publish, topic, data="after")
        # The restarted Redis kept no history, so the hub first tells clients
        # to re-fetch (reset), then the stream goes on live.
        frame = await stream.next_event()
        if frame.event == "reset":
            frame = await stream.next_event()
        assert (frame.id, frame.json["data"]) == (after, "after")


async def test_new_streams_get_a_retryable_answer_while_redis_is_down(
    private: tuple[RedisServer, UvicornServer], topic: str
) -> None:
    redis_server, srv = private
    redis_server.stop()
    await asyncio.to_thread(wait_for, hub_is(srv, "disconnected"), 10, "the hub to notice")
    async with open_stream(f"{srv.url}/events/stream/?topic={topic}") as stream:
        assert stream.response.status_code == 200  # EventSource retries only after a 200
        frames = await stream.until_end(timeout=10)
    assert str(frames[0].get("retry")).isdigit()
    assert any("unavailable" in comment for frame in frames for comment in frame.comments)
    poll = httpx.get(f"{srv.url}/events/poll/?topic={topic}", timeout=10)
    assert poll.status_code == 503
    assert poll.headers["retry-after"]
    assert httpx.get(f"{srv.url}/events/health/", timeout=5).status_code == 503


async def test_event_published_right_after_the_pubsub_connection_is_killed_still_arrives(
    private: tuple[RedisServer, UvicornServer], topic: str
) -> None:
    redis_server, srv = private
    async with open_stream(f"{srv.url}/events/stream/?topic={topic}") as stream:
        await stream.next_frame()
        await _subscribed(redis_server, topic)
        first = await asyncio.to_thread(publish, topic)
        assert (await stream.next_event()).id == first
        with redis_server.client() as client:
            assert client.client_kill_filter(_type="pubsub") >= 1
        missed = await asyncio.to_thread(publish, topic, data="while reconnecting")
        try:
            frame = await stream.next_event(timeout=10)
        except TimeoutError:
            raise AssertionError(srv.log()) from None
        assert (frame.id, frame.event, frame.json["data"]) == (missed, "invalidate", "while reconnecting")
        later = await asyncio.to_thread(publish, topic, data="later")
        assert (await stream.next_event()).id == later
    assert health(srv)["hub"] == "connected"


async def _subscribed(redis_server: RedisServer, topic: str) -> None:
    from events.backends.connection import channel_name

    def numsub() -> bool:
        with redis_server.client() as client:
            return bool(client.pubsub_numsub(channel_name(topic))[0][1] == 1)

    await asyncio.to_thread(wait_for, numsub, 10, "the hub to subscribe")
