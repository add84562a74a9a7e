"""The long-poll endpoint over a real uvicorn server."""

import asyncio
from collections.abc import Callable

import httpx
import redis

from events import publish
from events.backends.connection import channel_name

from .servers import RedisServer, UvicornServer, command_calls
from .sse import open_stream
from .waits import opened, subscribed


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


async def polls_waiting(server: UvicornServer, count: int) -> None:
    """Wait until the server (one worker) has ``count`` long-polls attached to its hub."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    async with httpx.AsyncClient(timeout=10) as client:
        while (await client.get(f"{server.url}/events/health/")).json()["polls"] != count:
            assert loop.time() < deadline, f"never {count} polls waiting"
            await asyncio.sleep(0.01)


async def test_a_waiting_poll_is_answered_in_one_piece_with_its_length(server: UvicornServer, topic: str) -> None:
    since = await asyncio.to_thread(publish, topic)
    request = asyncio.create_task(get(poll_url(server, topic, since=since)))
    await polls_waiting(server, 1)
    event_id = await asyncio.to_thread(publish, topic, data={"n": "é"})
    response = await asyncio.wait_for(request, 5)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert "transfer-encoding" not in response.headers
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.json() == {
        "events": [{"id": event_id, "topic": topic, "event": "invalidate", "data": {"n": "é"}}],
        "last_id": event_id,
    }


# What the hub knows spares reads ------------------------------------------------

HISTORY_READS = ("evalsha", "eval")


def spent(before: dict[str, int], after: dict[str, int], *names: str) -> int:
    return sum(after.get(name, 0) - before.get(name, 0) for name in names)


async def test_a_poll_re_armed_after_its_answer_reads_no_history_and_subscribes_nothing(
    private_server: tuple[RedisServer, UvicornServer], topic: str
) -> None:
    """The hub got the answered event on a subscription it still holds: nothing after it can be missed."""
    redis_server, private = private_server
    with redis_server.client() as client:
        since = await asyncio.to_thread(publish, topic)
        first = asyncio.create_task(get(poll_url(private, topic, since=since)))
        await polls_waiting(private, 1)
        answered = await asyncio.to_thread(publish, topic)
        assert (await asyncio.wait_for(first, 5)).json()["last_id"] == answered
        before = command_calls(client)
        again = asyncio.create_task(get(poll_url(private, topic, since=answered)))
        await polls_waiting(private, 1)
        after = command_calls(client)
        assert spent(before, after, *HISTORY_READS) == 0, "the re-armed poll read the history"
        assert spent(before, after, "subscribe") == 0, "the topic was subscribed again"
        newest = await asyncio.to_thread(publish, topic)
        assert [e["id"] for e in (await asyncio.wait_for(again, 5)).json()["events"]] == [newest]


async def test_ids_redis_did_not_make_still_get_a_reset_on_a_topic_the_hub_knows(
    server: UvicornServer, topic: str
) -> None:
    async with open_stream(f"{server.url}/events/stream/?topic={topic}") as stream:
        await opened(stream)
        known = await asyncio.to_thread(publish, topic)
        assert (await stream.next_event()).id == known
        ms, seq = known.split("-")
        for unknown in (f"{ms}-{int(seq) + 1000}", "99999999999999-0"):
            [event] = (await get(poll_url(server, topic, since=unknown))).json()["events"]
            assert (event["event"], event["data"]["reason"]) == ("reset", "unknown-id"), unknown


async def test_what_was_published_while_a_topic_was_unsubscribed_is_replayed(
    server: UvicornServer, topic: str, redis_client: redis.Redis
) -> None:
    from .servers import wait_for

    since = await asyncio.to_thread(publish, topic)
    first = asyncio.create_task(get(poll_url(server, topic, since=since)))
    await polls_waiting(server, 1)
    seen = await asyncio.to_thread(publish, topic)
    assert (await asyncio.wait_for(first, 5)).json()["last_id"] == seen
    channel = channel_name(topic, server.env["EVENTS_PREFIX"])
    await asyncio.to_thread(wait_for, lambda: redis_client.pubsub_numsub(channel)[0][1] == 0, 5, "unsubscribed")
    missed = await asyncio.to_thread(publish, topic)
    response = await get(poll_url(server, topic, since=seen))
    assert [e["id"] for e in response.json()["events"]] == [missed]
