"""The revocation registry in a worker's hub, against real Redis: single node and Redis Cluster alike.

(tests/test_revocation.py covers the whole path through uvicorn workers and the demo.)
"""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

import events
from events.backends.active import get_backend, get_hub
from events.core.hub import Hub
from events.core.revocations import CONTROL_TOPIC, Access
from events.core.subscriber import Subscriber
from events.revocation import revoke_session, session_hash

from .servers import RedisClusterServers


async def until(condition: object, timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(0.01)


async def attached(hub: Hub, topic: str, access: Access) -> Subscriber:
    client = get_backend().new_subscriber(frozenset({topic}), 16, is_stream=True)
    hub.revocations.register(client, access)
    await hub.attach(client)
    return client


async def check_revocations(topic: str) -> None:
    hub = get_hub()
    hub.start()
    assert hub.pubsub is not None
    await hub.pubsub.wait_connected(10)
    now = asyncio.get_running_loop().time()
    anonymous = await attached(hub, topic, Access(checked_at=now))
    assert CONTROL_TOPIC not in hub.wanted_topics(), "no signed-in client: no control subscription"
    mine = await attached(hub, topic, Access(user="41", session=session_hash("k1"), checked_at=now))
    assert CONTROL_TOPIC in hub.wanted_topics()
    other_session = await attached(hub, topic, Access(user="41", session=session_hash("k2"), checked_at=now))
    someone_else = await attached(hub, topic, Access(user="42", checked_at=now))
    try:
        await sync_to_async(revoke_session)("k1")
        await until(lambda: mine.close_reason == "revoked")
        assert other_session.close_reason is None and someone_else.close_reason is None

        await events.arevoke(41)
        await until(lambda: other_session.close_reason == "revoked")
        assert someone_else.close_reason is None and anonymous.close_reason is None
        # Registered after a revocation that came after it was authorized: ended at once.
        late = await attached(hub, topic, Access(user="42", checked_at=now))
        assert late.close_reason is None
        await events.arevoke(42)
        await until(lambda: someone_else.close_reason == "revoked")
        late_again = await attached(hub, topic, Access(user="42", checked_at=now))
        assert late_again.close_reason == "revoked"
        for client in (late, late_again):
            hub.detach(client)
    finally:
        for client in (mine, other_session, someone_else, anonymous):
            hub.detach(client)
    assert hub.revocations.registered == {}
    assert hub.revocations.by_user == {} and hub.revocations.by_session == {}
    assert CONTROL_TOPIC not in hub.wanted_topics(), "the last signed-in client left: unsubscribed"


@pytest.mark.django_db(transaction=True)
async def test_revocations_reach_the_hub_through_single_node_redis(topic: str) -> None:
    await check_revocations(topic)


@pytest.mark.django_db(transaction=True)
async def test_revocations_reach_the_hub_through_a_redis_cluster(
    cluster_settings: RedisClusterServers, topic: str
) -> None:
    await check_revocations(topic)


def test_users_cannot_publish_to_the_control_topic() -> None:
    with pytest.raises(ValueError, match="Invalid topic"):
        events.publish(CONTROL_TOPIC, {"user": "1"}, event="revoke")
