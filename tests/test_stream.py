"""The SSE stream over a real uvicorn server and a real Redis."""

import asyncio
import threading
from collections.abc import Callable

import pytest
import redis

from events import publish
from events.conf import conf
from events.core.ids import parse_id
from events.http.streaming import retry_hint

from .servers import UvicornServer, wait_for
from .sse import open_stream
from .waits import opened, subscribed


def stream_url(server: UvicornServer, *topics: str, **params: str) -> str:
    query = "&".join([f"topic={t}" for t in topics] + [f"{k}={v}" for k, v in params.items()])
    return f"{server.url}/events/stream/?{query}"


async def test_stream_headers_and_first_bytes_come_at_once(server: UvicornServer, topic: str) -> None:
    async with open_stream(stream_url(server, topic)) as stream:
        response = stream.response
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        first = await stream.next_frame(timeout=2)
        assert first is not None and str(first.get("retry")).isdigit()


async def test_published_event_arrives_with_id_event_and_data(server: UvicornServer, topic: str) -> None:
    async with open_stream(stream_url(server, topic)) as stream:
        await opened(stream)
        await subscribed(server, topic)
        event_id = await asyncio.to_thread(publish, topic, data={"n": 1})
        frame = await stream.next_event()
        assert (frame.id, frame.event, frame.json) == (event_id, "invalidate", {"topic": topic, "data": {"n": 1}})
        assert f'id: {event_id}\nevent: invalidate\ndata: {{"topic": "{topic}", "data": {{"n":1}}}}\n\n'.encode() in (
            stream.raw
        )


async def test_one_stream_receives_several_topics_in_publish_order(
    server: UvicornServer, make_topic: Callable[[], str]
) -> None:
    a, b = make_topic(), make_topic()
    async with open_stream(stream_url(server, a, b)) as stream:
        await opened(stream)
        await subscribed(server, a)
        await subscribed(server, b)
        ids = [
            await asyncio.to_thread(publish, a),
            await asyncio.to_thread(publish, b, event="renamed"),
            await asyncio.to_thread(publish, a, data="x"),
        ]
        frames = await stream.events(3)
        assert [(f.id, f.event, f.json["topic"]) for f in frames] == [
            (ids[0], "invalidate", a),
            (ids[1], "renamed", b),
            (ids[2], "invalidate", a),
        ]


async def test_two_clients_on_one_topic_both_receive(server: UvicornServer, topic: str) -> None:
    async with open_stream(stream_url(server, topic)) as one, open_stream(stream_url(server, topic)) as two:
        await opened(one)
        await opened(two)
        await subscribed(server, topic)
        event_id = await asyncio.to_thread(publish, topic)
        assert (await one.next_event()).id == event_id
        assert (await two.next_event()).id == event_id


async def test_client_on_another_topic_receives_nothing(server: UvicornServer, make_topic: Callable[[], str]) -> None:
    mine, other = make_topic(), make_topic()
    async with open_stream(stream_url(server, mine)) as stream:
        await opened(stream)
        await subscribed(server, mine)
        await asyncio.to_thread(publish, other)
        last = await asyncio.to_thread(publish, mine)
        # Events arrive in publish order: had the other topic leaked, it would come first.
        frame = await stream.next_event()
        assert (frame.id, frame.json["topic"]) == (last, mine)


async def test_heartbeat_comment_arrives_within_the_interval(server: UvicornServer, topic: str) -> None:
    async with open_stream(stream_url(server, topic)) as stream:
        await opened(stream)
        loop = asyncio.get_running_loop()
        started = loop.time()
        beats = 0
        while beats < 3:
            frame = await stream.next_frame(timeout=1.0)  # heartbeat is 0.2 s
            assert frame is not None
            beats += "heartbeat" in frame.comments
        assert loop.time() - started < 3


async def test_replay_after_last_event_id_is_complete_and_ordered(server: UvicornServer, topic: str) -> None:
    ids = [await asyncio.to_thread(publish, topic, data=i) for i in range(5)]
    async with open_stream(stream_url(server, topic), headers={"Last-Event-ID": ids[1]}) as stream:
        frames = await stream.events(3)
        assert [f.id for f in frames] == ids[2:]
        assert [f.json["data"] for f in frames] == [2, 3, 4]


async def test_last_event_id_query_parameter_works_like_the_header(server: UvicornServer, topic: str) -> None:
    ids = [await asyncio.to_thread(publish, topic) for _ in range(3)]
    async with open_stream(stream_url(server, topic, last_event_id=ids[0])) as stream:
        assert [f.id for f in await stream.events(2)] == ids[1:]


async def test_replay_only_includes_the_requested_topics(server: UvicornServer, make_topic: Callable[[], str]) -> None:
    mine, other = make_topic(), make_topic()
    start = await asyncio.to_thread(publish, mine)
    await asyncio.to_thread(publish, other)
    wanted = await asyncio.to_thread(publish, mine)
    async with open_stream(stream_url(server, mine), headers={"Last-Event-ID": start}) as stream:
        frame = await stream.next_event()
        assert (frame.id, frame.json["topic"]) == (wanted, mine)


async def test_replay_has_no_gap_and_no_duplicate_while_events_are_published(server: UvicornServer, topic: str) -> None:
    first = await asyncio.to_thread(publish, topic, data=-1)
    published: list[str] = []
    stop = threading.Event()

    def publisher() -> None:
        while not stop.is_set() and len(published) < 2000:
            published.append(publish(topic, data=len(published)))

    thread = threading.Thread(target=publisher)
    thread.start()
    try:
        wait_for(lambda: len(published) >= 50, 10, "50 events published")
        async with open_stream(stream_url(server, topic), headers={"Last-Event-ID": first}) as stream:
            received: list[str] = []
            # Keep publishing while the stream replays and goes live.
            while len(received) < 300:
                received.append(str((await stream.next_event()).id))
            stop.set()
            await asyncio.to_thread(thread.join, 10)
            while len(received) < len(published):
                received.append(str((await stream.next_event()).id))
    finally:
        stop.set()
        thread.join(10)
    assert received == published
    assert [parse_id(i) for i in received] == sorted(parse_id(i) for i in received)


async def test_unknown_id_gets_a_reset_with_id_and_data(server: UvicornServer, topic: str) -> None:
    async with open_stream(stream_url(server, topic), headers={"Last-Event-ID": "99999999999999-0"}) as stream:
        frame = await stream.next_event()
        assert frame.event == "reset"
        assert frame.id is not None and parse_id(frame.id)
        assert frame.json["topic"] is None
        assert frame.json["data"]["reason"] == "unknown-id"
        # Then it goes live.
        await subscribed(server, topic)
        event_id = await asyncio.to_thread(publish, topic)
        assert (await stream.next_event()).id == event_id


async def test_id_older_than_the_history_gets_a_reset(
    start_server: Callable[..., UvicornServer], make_topic: Callable[[], str], redis_client: redis.Redis
) -> None:
    prefix = f"expiry-{make_topic()}"
    srv = start_server({"EVENTS_PREFIX": prefix})
    from django.conf import settings
    from django.test import override_settings

    with override_settings(EVENTS={**settings.EVENTS, "PREFIX": prefix, "HISTORY": 10}):
        first = await asyncio.to_thread(publish, "t")
        for _ in range(400):
            await asyncio.to_thread(publish, "t")
    try:
        async with open_stream(f"{srv.url}/events/stream/?topic=t", headers={"Last-Event-ID": first}) as stream:
            frame = await stream.next_event()
            assert (frame.event, frame.json["data"]["reason"]) == ("reset", "history-expired")
    finally:
        redis_client.delete(f"{prefix}:history")


async def test_a_made_up_id_inside_the_history_range_gets_a_reset(server: UvicornServer, topic: str) -> None:
    before = await asyncio.to_thread(publish, topic)
    await asyncio.to_thread(publish, topic)
    ms, seq = parse_id(before)
    async with open_stream(stream_url(server, topic), headers={"Last-Event-ID": f"{ms}-{seq + 7}"}) as stream:
        assert (await stream.next_event()).event == "reset"


async def test_disconnected_client_releases_its_subscription(
    server: UvicornServer, topic: str, redis_client: redis.Redis
) -> None:
    from events.backends.connection import channel_name

    async with open_stream(stream_url(server, topic)) as stream:
        await opened(stream)
        await subscribed(server, topic)
    wait_for(
        lambda: redis_client.pubsub_numsub(channel_name(topic, server.env["EVENTS_PREFIX"]))[0][1] == 0,
        5,
        "PUBSUB NUMSUB to drop to 0",
    )


@pytest.mark.parametrize("extra", ["", "&topic=other"])
async def test_subscription_is_shared_one_redis_subscriber_per_process(
    server: UvicornServer, topic: str, extra: str, redis_client: redis.Redis
) -> None:
    from events.backends.connection import channel_name

    async with open_stream(stream_url(server, topic) + extra) as one, open_stream(stream_url(server, topic)) as two:
        await opened(one)
        await opened(two)
        await subscribed(server, topic)
        assert redis_client.pubsub_numsub(channel_name(topic, server.env["EVENTS_PREFIX"]))[0][1] == 1


async def test_open_event_when_asked_once_subscribed_with_the_resume_position(
    server: UvicornServer, topic: str
) -> None:
    since = await asyncio.to_thread(publish, topic, data="old")
    async with open_stream(stream_url(server, topic, open_event="1", last_event_id=since)) as stream:
        frame = await stream.next_event()
        assert (frame.event, frame.id, frame.json) == ("open", since, {"topic": None, "data": None})
        # Sent once the topics are subscribed: an event published now arrives.
        event_id = await asyncio.to_thread(publish, topic, data="new")
        assert (await stream.next_event()).id == event_id


async def test_open_event_of_a_new_stream_names_now_and_nothing_published_after_it_is_missed(
    server: UvicornServer, topic: str
) -> None:
    before = await asyncio.to_thread(publish, topic, data="before")
    async with open_stream(stream_url(server, topic, open_event="1")) as stream:
        frame = await stream.next_event()
        assert frame.event == "open" and frame.id is not None
        assert parse_id(frame.id) >= parse_id(before)
        event_id = await asyncio.to_thread(publish, topic, data="after")
        nxt = await stream.next_event()
        assert (nxt.id, nxt.json["data"]) == (event_id, "after")


async def test_no_open_event_unless_asked(server: UvicornServer, topic: str) -> None:
    async with open_stream(stream_url(server, topic)) as stream:
        await opened(stream)
        await subscribed(server, topic)
        event_id = await asyncio.to_thread(publish, topic)
        assert (await stream.next_event()).id == event_id


async def test_a_malformed_open_event_flag_is_a_400(server: UvicornServer, topic: str) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(stream_url(server, topic, open_event="maybe"))
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_parameter"


def test_the_retry_hint_is_the_base_plus_up_to_half_again() -> None:
    base = conf.RETRY_MS
    hints = {int(retry_hint().removeprefix(b"retry: ").strip()) for _ in range(30_000)}
    assert min(hints) >= base and max(hints) <= base + base // 2
    # Spread over the whole range, ends included (each missed by 30,000 draws with odds of e^-30).
    assert min(hints) == base and max(hints) == base + base // 2
