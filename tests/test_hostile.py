"""Hostile clients and foreign data, against a real uvicorn worker and a real Redis.

Each test here reproduces an attack on a running worker: clients that leave at
once or never read, foreign messages in Redis, huge replays, ids at the edge
of what Redis can hold, malformed requests. The worker must stay correct and
bounded: slots, subscriptions, sockets and memory released; every error JSON.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from django.conf import settings
from django.test import override_settings

from events import publish
from events.backends.connection import close_sync_clients

from .servers import RedisServer, UvicornServer, wait_for
from .sse import open_raw_stream, open_stream
from .waits import opened

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
    channels = client.pubsub_channels(f"{srv.env['EVENTS_PREFIX']}:topic:*")
    return [c.decode() if isinstance(c, bytes) else c for c in channels]


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
    # ... and no client's departure disturbed the hub's own connection.
    assert metric(srv, "events_redis_reconnects_total") == 0


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


# 2. Foreign data in Redis ----------------------------------------------------


async def test_foreign_messages_on_a_channel_are_skipped_and_the_hub_goes_on(private: Private, topic: str) -> None:
    redis_server, srv = private
    channel = f"{srv.env['EVENTS_PREFIX']}:topic:{topic}"
    async with open_stream(stream_url(srv, topic)) as stream:
        await stream.next_frame()
        with redis_server.client() as client:
            await asyncio.to_thread(wait_for, lambda: client.pubsub_numsub(channel)[0][1] == 1, 5, "subscribed")
            for garbage in [
                b"garbage",
                b"1-1\nevil\r\ndata: x\n{}",
                b"1-1\ninvalidate\nnot json",
                b"\xff\xfe",
                b"x-y\ne\n{}",
            ]:
                client.publish(channel, garbage)
        event_id = await asyncio.to_thread(publish, topic, {"n": 1})
        frame = await stream.next_event()
        assert (frame.id, frame.event, frame.json["data"]) == (event_id, "invalidate", {"n": 1})
    assert httpx.get(f"{srv.url}/events/health/", timeout=5).status_code == 200
    assert "malformed" in srv.log()
    assert "Traceback" not in srv.log()


async def test_a_message_with_an_id_redis_never_made_is_skipped_and_hides_no_event(
    private: Private, make_topic: Callable[[], str]
) -> None:
    """Anyone who can PUBLISH could send a well-formed message with an id far in the future.

    Taken as an event, its id would become the hub's de-duplication mark (and
    the clients'), and every real event after it, on any topic, would be
    dropped as already seen.
    """
    redis_server, srv = private
    attacked, other = make_topic(), make_topic()
    prefix = srv.env["EVENTS_PREFIX"]
    async with open_stream(stream_url(srv, attacked)) as stream, open_stream(stream_url(srv, other)) as bystander:
        await stream.next_frame()
        await bystander.next_frame()
        with redis_server.client() as client:
            channels = [f"{prefix}:topic:{attacked}", f"{prefix}:topic:{other}"]

            def both_subscribed() -> bool:
                return [count for _, count in client.pubsub_numsub(*channels)] == [1, 1]

            await asyncio.to_thread(wait_for, both_subscribed, 5, "both subscribed")
            # Year 5138; well-formed in every other respect.
            client.publish(channels[0], b"99999999999999-0\ninvalidate\n{}")
        real = await asyncio.to_thread(publish, attacked, {"n": 1})
        elsewhere = await asyncio.to_thread(publish, other, {"n": 2})
        assert (await stream.next_event()).id == real
        assert (await bystander.next_event()).id == elsewhere
    assert "ahead of the newest id Redis has made" in srv.log()


async def test_an_event_id_ahead_of_redis_s_clock_that_redis_made_is_delivered(private: Private, topic: str) -> None:
    """Ids ahead of Redis's clock are real when Redis made them (its clock went back, or jumped ahead).

    Here the history is given an entry a day ahead, as the publish script
    would add it; the hub checks such an id against Redis rather than skip it.
    """
    redis_server, srv = private
    prefix = srv.env["EVENTS_PREFIX"]
    channel = f"{prefix}:topic:{topic}"
    async with open_stream(stream_url(srv, topic)) as stream:
        await stream.next_frame()
        with redis_server.client() as client:
            await asyncio.to_thread(wait_for, lambda: client.pubsub_numsub(channel)[0][1] == 1, 5, "subscribed")
            seconds, _ = client.time()
            ahead = f"{(seconds + 86400) * 1000}-0"
            client.eval(
                "local id = redis.call('XADD', KEYS[1], ARGV[1], 't', ARGV[2], 'e', 'invalidate', 'd', '{}') "
                "redis.call('PUBLISH', ARGV[3], id .. '\\n' .. 'invalidate' .. '\\n' .. '{}') return id",
                1,
                f"{prefix}:history",
                ahead,
                topic,
                channel,
            )
        assert (await stream.next_event()).id == ahead
        # Redis goes on from there (the same millisecond, the next sequence).
        after = await asyncio.to_thread(publish, topic)
        assert after.startswith(ahead.split("-")[0])
        assert (await stream.next_event()).id == after
    assert "ahead of the newest id" not in srv.log()


async def test_foreign_entries_in_the_history_are_skipped_by_replays(private: Private, topic: str) -> None:
    redis_server, srv = private
    before = await asyncio.to_thread(publish, topic, "before")
    with redis_server.client() as client:
        key = f"{srv.env['EVENTS_PREFIX']}:history"
        client.xadd(key, {"t": topic, "x": "y"})
        client.xadd(key, {"t": topic, "e": "invalidate", "d": "{not json"})
        client.xadd(key, {"t": topic, "e": "evil\nline", "d": "1"})
    after = await asyncio.to_thread(publish, topic, "after")

    response = httpx.get(poll_url(srv, topic, since="0-0"), timeout=5)
    assert response.status_code == 200, response.text
    assert [event["id"] for event in response.json()["events"]] == [before, after]

    async with open_stream(stream_url(srv, topic, last_event_id="0-0")) as stream:
        assert [frame.id for frame in await stream.events(2)] == [before, after]
        live = await asyncio.to_thread(publish, topic, "live")
        assert (await stream.next_event()).id == live
    assert "malformed" in srv.log()


# 3. Bounded replays ------------------------------------------------------------


def fill_history(redis_server: RedisServer, prefix: str, topic: str, other: str, count: int) -> list[str]:
    """``count`` events in the history, every tenth on ``topic``, the rest on ``other``; the ids on ``topic``."""
    ids = []
    with redis_server.client() as client:
        pipe = client.pipeline(transaction=False)
        for i in range(count):
            pipe.xadd(
                f"{prefix}:history", {"t": topic if i % 10 == 0 else other, "e": "invalidate", "d": f'"{"x" * 200}"'}
            )
        for i, entry_id in enumerate(pipe.execute()):
            if i % 10 == 0:
                ids.append(entry_id.decode())
    return ids


def script_runs(redis_server: RedisServer) -> int:
    with redis_server.client() as client:
        stats = client.info("commandstats")
    return sum(int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_evalsha", "cmdstat_eval"))


async def test_a_long_poll_answer_is_bounded_and_continues_from_last_id(
    private: Private, topic: str, make_topic: Callable[[], str]
) -> None:
    from events.http.polling import MAX_EVENTS

    redis_server, srv = private
    ids = fill_history(redis_server, srv.env["EVENTS_PREFIX"], topic, make_topic(), 10 * (2 * MAX_EVENTS + 7))
    received: list[str] = []
    since = "0-0"
    async with httpx.AsyncClient(timeout=10) as client:
        while len(received) < len(ids):
            body = (await client.get(poll_url(srv, topic, since=since))).json()
            assert 0 < len(body["events"]) <= MAX_EVENTS
            received += [event["id"] for event in body["events"]]
            since = body["last_id"]
    assert received == ids


async def test_a_resume_reads_the_history_in_bounded_batches(
    private: Private, topic: str, make_topic: Callable[[], str]
) -> None:
    """Even on a topic with no events, no single script run walks the whole history."""
    from events.backends.history import BATCH

    redis_server, srv = private
    other = make_topic()
    fill_history(redis_server, srv.env["EVENTS_PREFIX"], other, make_topic(), 6 * BATCH)
    quiet = make_topic()  # no events at all
    runs = script_runs(redis_server)
    response = httpx.get(poll_url(srv, quiet, since="0-0"), timeout=10)
    assert response.status_code == 200 and response.json()["events"] == []
    assert script_runs(redis_server) - runs >= 6, "the long-poll read the history in one script run"

    runs = script_runs(redis_server)
    async with open_stream(stream_url(srv, quiet, last_event_id="0-0")) as stream:
        await stream.next_frame()
        await asyncio.to_thread(wait_for, lambda: script_runs(redis_server) - runs >= 6, 10, "batched replay")
        live = await asyncio.to_thread(publish, quiet)
        assert (await stream.next_event()).id == live


async def test_a_stream_replays_a_long_history_in_order_then_goes_live(
    private: Private, topic: str, make_topic: Callable[[], str]
) -> None:
    from events.backends.history import BATCH

    redis_server, srv = private
    ids = fill_history(redis_server, srv.env["EVENTS_PREFIX"], topic, make_topic(), 30 * BATCH)
    async with open_stream(stream_url(srv, topic, last_event_id="0-0")) as stream:
        assert [frame.id for frame in await stream.events(len(ids), timeout=10)] == ids
        live = await asyncio.to_thread(publish, topic)
        assert (await stream.next_event()).id == live


# 6. Ids at the edge ------------------------------------------------------------


async def test_the_largest_valid_id_is_an_unknown_id_not_a_retry_loop(server: UvicornServer, topic: str) -> None:
    await asyncio.to_thread(publish, topic)
    async with open_stream(stream_url(server, topic, last_event_id=MAX_ID)) as stream:
        frame = await stream.next_event()
        assert (frame.event, frame.json["data"]["reason"]) == ("reset", "unknown-id")
    response = httpx.get(poll_url(server, topic, since=MAX_ID), timeout=5)
    assert response.status_code == 200
    [event] = response.json()["events"]
    assert (event["event"], event["data"]["reason"]) == ("reset", "unknown-id")


async def test_the_command_pool_is_bounded_and_waiting_for_it_is_a_retryable_answer(
    private: Private, topic: str
) -> None:
    from events.backends.connection import POOL_SIZE, POOL_WAIT

    redis_server, srv = private
    assert httpx.get(poll_url(srv, topic, since="0-0"), timeout=10).status_code == 200  # warm up the pool

    # Redis holds every command for longer than POOL_WAIT: the first long-polls
    # hold the pool's connections, the others wait for one, then give up. An
    # open stream keeps the topic subscribed (the polls attach without Redis),
    # and each poll asks from another id (identical polls would share one read).
    async with open_stream(stream_url(srv, topic)) as stream, httpx.AsyncClient(timeout=15) as client:
        await opened(stream)
        pause_redis(redis_server, POOL_WAIT + 1.5)
        answers = await asyncio.gather(
            *(client.get(poll_url(srv, topic, since=f"0-{i + 1}")) for i in range(3 * POOL_SIZE))
        )
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {200, 503}, statuses
    refused = [answer for answer in answers if answer.status_code == 503]
    assert refused, "every long-poll got a connection: the pool is not bounded"
    for answer in refused:
        assert answer.json()["code"] == "unavailable"
        assert answer.headers["retry-after"]

    with redis_server.client() as client:
        connections = len(client.client_list())
    # The pool, the hub's pub/sub and command connections, and this one.
    assert connections <= POOL_SIZE + 3, f"{connections} connections to Redis"


# 4. Clients that never read ------------------------------------------------------


def server_side_states(srv: UvicornServer, client_ports: set[int]) -> list[str]:
    """TCP states of the server's ends of the connections from ``client_ports`` (/proc/net/tcp)."""
    states = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        remote_port = int(fields[2].split(":")[1], 16)
        if local_port == srv.port and remote_port in client_ports:
            states.append(fields[3])
    return states


@pytest.mark.parametrize("http", ["httptools", "h11"])
async def test_after_the_write_timeout_a_stuck_client_s_socket_is_aborted(
    start_server: Callable[..., UvicornServer], topic: str, http: str
) -> None:
    srv = start_server({"EVENTS_WRITE_TIMEOUT": "1", "EVENTS_HEARTBEAT": "0.2"}, args=["--http", http])
    stuck = [await open_raw_stream(stream_url(srv, topic), buffer=4096) for _ in range(20)]
    try:
        for stream in stuck:
            await stream.read_until(b"stream open")
        ports = {stream.writer.get_extra_info("sockname")[1] for stream in stuck}
        await asyncio.to_thread(wait_for, lambda: metric(srv, "events_streams_open") == 20, 10, "20 streams")
        assert len(server_side_states(srv, ports)) == 20

        # Far more than the socket buffers hold: every stream blocks writing.
        # (Each under its own event name: the hub would merge invalidations
        # of one topic and name that arrive while it is behind.)
        def flood() -> None:
            for number in range(200):
                publish(topic, "x" * 16_000, event=f"e{number}")

        await asyncio.to_thread(flood)
        await asyncio.to_thread(wait_for, lambda: metric(srv, "events_streams_open") == 0, 15, "streams released")
        # The sockets are gone too (aborted: no FIN_WAIT or ESTABLISHED left
        # holding the unread megabytes), while the clients still hold theirs.
        await asyncio.to_thread(
            wait_for, lambda: not server_side_states(srv, ports), 5, "the server's sockets to be aborted"
        )
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(stuck[0].reader.read(), 5)
    finally:
        for stream in stuck:
            await stream.close()
    log = srv.log()
    assert "returned without completing response" not in log
    assert "cannot find the connection" not in log, "uvicorn's internals changed: see events/serving/transport.py"
    assert log.count("reason=write-timeout") == 20


# Smaller: every error is JSON ------------------------------------------------------

ENDPOINTS = ["/events/stream/?topic=a", "/events/poll/?topic=a"]


def assert_json_error(response: httpx.Response, status: int, codes: set[str]) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/json", response.text[:300]
    body = response.json()
    assert body["code"] in codes and body["error"], body


@pytest.fixture(params=["events-middleware", "stock-middleware"])
def any_chain(request: pytest.FixtureRequest, start_server: Callable[..., UvicornServer]) -> UvicornServer:
    """A worker whose event endpoints use EVENTS["MIDDLEWARE"], or one using settings.MIDDLEWARE."""
    if request.param == "events-middleware":
        return start_server()
    return start_server({"DJANGO_SETTINGS_MODULE": "tests.settings_stock_middleware"})


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_disallowed_host_is_a_json_400(any_chain: UvicornServer, endpoint: str) -> None:
    response = httpx.get(any_chain.url + endpoint, headers={"Host": "evil.example"}, timeout=5)
    assert_json_error(response, 400, {"disallowed_host", "bad_request"})


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_too_many_query_fields_is_a_json_400(any_chain: UvicornServer, endpoint: str) -> None:
    query = "&".join(f"f{i}=1" for i in range(1001))  # DATA_UPLOAD_MAX_NUMBER_FIELDS is 1000
    response = httpx.get(f"{any_chain.url}{endpoint}&{query}", timeout=5)
    assert_json_error(response, 400, {"too_many_fields"})


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_server_error_is_a_json_500(start_server: Callable[..., UvicornServer], endpoint: str) -> None:
    srv = start_server({"EVENTS_AUTHORIZE": "tests.hooks.broken"})
    response = httpx.get(srv.url + endpoint, timeout=5)
    assert_json_error(response, 500, {"internal_server_error"})
    assert "bug in the authorization hook" not in response.text
    assert "bug in the authorization hook" in srv.log()  # Django still logs it


def test_last_event_id_given_twice_is_a_400_even_with_the_header(server: UvicornServer) -> None:
    response = httpx.get(
        f"{server.url}/events/stream/?topic=a&last_event_id=1-0&last_event_id=2-0",
        headers={"Last-Event-ID": "1-0"},
        timeout=5,
    )
    assert_json_error(response, 400, {"repeated_parameter"})
