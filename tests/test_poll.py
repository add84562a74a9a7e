"""The long-poll endpoint over a real uvicorn server."""

import asyncio
from collections.abc import Callable

import httpx
import redis

from events import publish

from .servers import UvicornServer
from .waits import subscribed


def poll_url(server: UvicornServer, *topics: str, **params: str) -> str:
    query = "&".join([f"topic={t}" for t in topics] + [f"{k}={v}" for k, v in params.items()])
    return f"{server.url}/events/poll/?{query}"


async def get(url: str, timeout: float = 10) -> httpx.Response:
    async with httpx.AsyncClient(timeout=timeout) as client:
        return await client.get(url)


async def test_poll_with_since_returns_at_once_with_the_events_after_it(server: UvicornServer, topic: str) -> None:
    ids = [await asyncio.to_thread(publish, topic, data=i) for i in range(3)]
    response = await get(poll_url(server, topic, since=ids[0]))
    assert response.status_code == 200
    assert response.json() == {
        "events": [
            {"id": ids[1], "topic": topic, "event": "invalidate", "data": 1},
            {"id": ids[2], "topic": topic, "event": "invalidate", "data": 2},
        ],
        "last_id": ids[2],
    }


async def test_poll_without_since_waits_for_the_next_event(server: UvicornServer, topic: str) -> None:
    await asyncio.to_thread(publish, topic, data="old")  # before the request: not returned
    request = asyncio.create_task(get(poll_url(server, topic)))
    await subscribed(server, topic)
    assert not request.done()
    event_id = await asyncio.to_thread(publish, topic, data="new")
    response = await asyncio.wait_for(request, 5)
    assert response.json() == {
        "events": [{"id": event_id, "topic": topic, "event": "invalidate", "data": "new"}],
        "last_id": event_id,
    }


async def test_poll_with_since_waits_when_nothing_is_newer(server: UvicornServer, topic: str) -> None:
    since = await asyncio.to_thread(publish, topic)
    request = asyncio.create_task(get(poll_url(server, topic, since=since)))
    await subscribed(server, topic)
    event_id = await asyncio.to_thread(publish, topic)
    response = await asyncio.wait_for(request, 5)
    assert [e["id"] for e in response.json()["events"]] == [event_id]


async def test_poll_times_out_with_no_events_and_the_last_id_to_use(
    server: UvicornServer, topic: str, make_topic: Callable[[], str]
) -> None:
    since = await asyncio.to_thread(publish, topic)
    await asyncio.to_thread(publish, make_topic())  # another topic: moves the stream on, not this poll
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await get(poll_url(server, topic, since=since))
    assert loop.time() - started >= 1.4  # EVENTS_LONGPOLL_TIMEOUT=1.5 on the test server
    body = response.json()
    assert response.status_code == 200
    assert body["events"] == []
    # Polling again from last_id must not miss what comes next.
    follow = asyncio.create_task(get(poll_url(server, topic, since=body["last_id"])))
    await subscribed(server, topic)
    event_id = await asyncio.to_thread(publish, topic)
    assert [e["id"] for e in (await asyncio.wait_for(follow, 5)).json()["events"]] == [event_id]


async def test_poll_with_an_expired_or_unknown_since_answers_at_once_with_reset(
    server: UvicornServer, topic: str
) -> None:
    response = await get(poll_url(server, topic, since="99999999999999-0"))
    [event] = response.json()["events"]
    assert event["event"] == "reset"
    assert event["topic"] is None
    assert response.json()["last_id"] == event["id"]


async def test_poll_releases_its_subscription_when_answered(
    server: UvicornServer, topic: str, redis_client: redis.Redis
) -> None:
    from events.backends.connection import channel_name

    from .servers import wait_for

    since = await asyncio.to_thread(publish, topic)
    request = asyncio.create_task(get(poll_url(server, topic, since=since)))
    await subscribed(server, topic)
    await asyncio.to_thread(publish, topic)
    await asyncio.wait_for(request, 5)
    channel = channel_name(topic, server.env["EVENTS_PREFIX"])
    await asyncio.to_thread(
        wait_for, lambda: redis_client.pubsub_numsub(channel)[0][1] == 0, 5, "PUBSUB NUMSUB to drop to 0"
    )
