"""The hub's lifecycle under cancellation and shutdown, and its Redis side's safety nets."""

from __future__ import annotations

import asyncio

import pytest

from events.backends.active import get_hub
from events.backends.cluster.pubsub import ShardedPubSub
from events.core.hub import Hub
from events.core.subscriber import Subscriber
from events.core.tasks import cancel_and_wait
from events.exceptions import HubUnavailable

from .servers import RedisClusterServers


async def test_cancel_and_wait_does_not_swallow_the_callers_cancellation() -> None:
    finishing = asyncio.Event()

    async def slow_to_end() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await finishing.wait()  # cleanup that takes a while

    task = asyncio.ensure_future(slow_to_end())
    await asyncio.sleep(0)
    caller = asyncio.ensure_future(cancel_and_wait(task))
    await asyncio.sleep(0)
    assert not caller.done()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    finishing.set()
    await asyncio.wait([task])
    assert task.cancelled()


class SlowToStop:
    """A hub connection whose reader takes a while to end when cancelled (its cleanup awaits)."""

    def __init__(self) -> None:
        self.finishing = asyncio.Event()

    @property
    def connected(self) -> bool:
        return True

    async def wait_connected(self, timeout: float) -> None:
        return None

    async def subscribe(self, topics: frozenset[str]) -> list[asyncio.Future[None]]:
        return []

    def release(self, topics: list[str]) -> None:
        return None

    async def read_forever(self) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await self.finishing.wait()

    async def aclose(self) -> None:
        return None


async def test_hub_stop_does_not_swallow_the_callers_cancellation() -> None:
    connection = SlowToStop()
    hub = Hub(lambda hub: connection)
    hub.start()
    await asyncio.sleep(0)
    stopper = asyncio.ensure_future(hub.stop())
    await asyncio.sleep(0)
    assert not stopper.done()
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    connection.finishing.set()
    await hub.stop()


async def test_a_stream_attaching_while_shutdown_begins_is_ended_by_it(topic: str) -> None:
    hub = get_hub()
    client = Subscriber(frozenset({topic}), 10, is_stream=True)
    attaching = asyncio.ensure_future(hub.attach(client))
    await asyncio.sleep(0)  # waiting for the hub's first connection to Redis
    assert not hub.connected
    hub.begin_shutdown()
    try:
        await attaching
    except HubUnavailable:
        assert client not in hub.streams
    else:
        assert client.close_reason is not None, "a stream attached during shutdown would never be ended"


async def test_the_cluster_supervisor_survives_an_unexpected_error(
    cluster_settings: RedisClusterServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures = 0
    refresh = ShardedPubSub._refresh_slots

    async def fails_once(self: ShardedPubSub) -> None:
        nonlocal failures
        if failures == 0:
            failures += 1
            raise RuntimeError("a reply nobody foresaw")
        await refresh(self)

    monkeypatch.setattr(ShardedPubSub, "_refresh_slots", fails_once)
    hub = get_hub()
    hub.start()
    assert hub.pubsub is not None
    await hub.pubsub.wait_connected(10)
    assert failures == 1 and hub.connected
