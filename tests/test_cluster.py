"""Redis Cluster mode (``redis+cluster://``) against a real local cluster: 3 primaries, 1 replica each.

Sharded pub/sub (SPUBLISH/SSUBSCRIBE, one connection per primary), a history
stream per slot group, composite ids that resume exactly across shards, for
the stream and the long-poll, and exactly-once delivery across workers.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from events import current_id, publish
from events.backends.cluster.layout import channel_name, group_of, group_slot, history_key
from events.backends.cluster.positions import format_positions, parse_positions

from .cluster import pubsub_connections, shard_subscribers, topics_per_shard
from .servers import RedisClusterServers, UvicornServer, wait_for
from .sse import SSEStream, open_raw_stream, open_stream


def stream_url(server: UvicornServer, topics: list[str]) -> str:
    return f"{server.url}/events/stream/?" + "&".join(f"topic={t}" for t in topics)


async def wait_subscribed(
    cluster: RedisClusterServers, server: UvicornServer, topics: list[str], count: int = 1
) -> None:
    prefix = server.env["EVENTS_PREFIX"]
    try:
        await asyncio.to_thread(
            wait_for,
            lambda: all(shard_subscribers(cluster, t, prefix) >= count for t in topics),
            10,
            f"{count} subscriber(s) of each shard channel",
        )
    except AssertionError:
        raise AssertionError(server.log()[-3000:]) from None


async def next_events(stream: SSEStream, count: int, timeout: float = 5.0) -> list[tuple[str, str, object]]:
    frames = await stream.events(count, timeout)
    return [(f.id or "", f.json["topic"], f.json["data"]) for f in frames]


async def test_publish_goes_to_the_topics_shard_and_is_found_with_shardchannels(
    cluster_server: UvicornServer, cluster_settings: RedisClusterServers
) -> None:
    cluster = cluster_settings
    prefix = cluster_server.env["EVENTS_PREFIX"]
    topics = [t for ts in topics_per_shard(cluster).values() for t in ts]
    async with open_stream(stream_url(cluster_server, topics)) as stream:
        await stream.next_frame()
        await wait_subscribed(cluster, cluster_server, topics)
        for topic in topics:
            owner = cluster.owner(group_slot(group_of(topic)))
            with owner.client() as client:
                found = client.execute_command("PUBSUB", "SHARDCHANNELS", f"{prefix}:topic:{topic}*")
                assert [c.decode() for c in found] == [channel_name(topic, prefix)]
                assert channel_name(topic, prefix).startswith(f"{prefix}:topic:{topic}{{")
                # Sharded only: nothing on the classic channel namespace.
                assert client.execute_command("PUBSUB", "CHANNELS", f"{prefix}:topic:{topic}*") == []
            event_id = await asyncio.to_thread(publish, topic, data={"t": topic})
            [(frame_id, got_topic, data)] = await next_events(stream, 1)
            assert (got_topic, data) == (topic, {"t": topic})
            # The group's stream on the owner holds it, under the id publish returned.
            with owner.client() as client:
                [(_, fields)] = client.xrange(history_key(group_of(topic), prefix), min=event_id, max=event_id)
                assert fields[b"t"] == topic.encode()
            assert frame_id.startswith("c")


async def test_one_pubsub_connection_per_primary_whatever_the_number_of_streams(
    cluster_server: UvicornServer, cluster_settings: RedisClusterServers
) -> None:
    cluster = cluster_settings
    topics = [t for ts in topics_per_shard(cluster, per_shard=3).values() for t in ts]
    streams = [await open_raw_stream(stream_url(cluster_server, [t])) for t in topics for _ in range(4)]
    try:
        await asyncio.gather(*(s.read_until(b"stream open") for s in streams))
        await wait_subscribed(cluster, cluster_server, topics)
        for node in cluster.primaries():
            assert pubsub_connections(node) == 1, f"node {node.port} has more than one pub/sub connection"
        # One subscription per topic, however many streams want it, ...
        prefix = cluster_server.env["EVENTS_PREFIX"]
        assert all(shard_subscribers(cluster, t, prefix) == 1 for t in topics)
        # ... released when the last of them goes, not before.
        for s in streams[4:]:
            await s.close()
        await asyncio.to_thread(
            wait_for,
            lambda: all(shard_subscribers(cluster, t, prefix) == 0 for t in topics[1:]),
            10,
            "the released topics unsubscribed",
        )
        assert shard_subscribers(cluster, topics[0], prefix) == 1
    finally:
        for s in streams:
            await s.close()


async def test_each_shard_is_read_without_waiting_for_the_others(
    cluster_server: UvicornServer, cluster_settings: RedisClusterServers
) -> None:
    """redis-py's get_sharded_message visits nodes in turn; each primary here has its own reader."""
    cluster = cluster_settings
    topics = [t for ts in topics_per_shard(cluster).values() for t in ts]
    async with open_stream(stream_url(cluster_server, topics)) as stream:
        await stream.next_frame()
        await wait_subscribed(cluster, cluster_server, topics)
        for _ in range(3):
            for topic in topics:
                started = time.monotonic()
                await asyncio.to_thread(publish, topic)
                await next_events(stream, 1, timeout=5)
                assert time.monotonic() - started < 0.3, "a shard's message waited for another shard"


async def test_resume_across_shards_is_exact(
    cluster_server: UvicornServer, cluster_settings: RedisClusterServers
) -> None:
    cluster = cluster_settings
    topics = [t for ts in topics_per_shard(cluster, per_shard=2).values() for t in ts]
    url = stream_url(cluster_server, topics)
    async with open_stream(url) as stream:
        await stream.next_frame()
        await wait_subscribed(cluster, cluster_server, topics)
        for i, topic in enumerate(topics):
            await asyncio.to_thread(publish, topic, data=i)
        received = await next_events(stream, len(topics))
    resume_from = received[2][0]
    # Every id names one position per group of the request's topics.
    assert set(parse_positions(resume_from)) == {group_of(t) for t in topics}
    later = [(topic, await asyncio.to_thread(publish, topic, data=f"later-{topic}")) for topic in reversed(topics)]
    async with open_stream(url, {"Last-Event-ID": resume_from}) as stream:
        replay = await next_events(stream, len(topics) - 3 + len(later))
        got = [(topic, data) for _, topic, data in replay]
        expected = [(topics[i], i) for i in range(3, len(topics))] + [(t, f"later-{t}") for t, _ in later]
        assert Counter(got) == Counter(expected), "an event was lost or repeated"
        # Per topic, in publish order.
        for topic in topics:
            mine = [data for t, data in got if t == topic]
            assert mine == [d for t, d in expected if t == topic]
        # Then live, and resuming from the last id replays nothing.
        live = await asyncio.to_thread(publish, topics[0], data="live")
        [(last_id, topic, data)] = await next_events(stream, 1)
        assert (topic, data) == (topics[0], "live")
        assert live
    async with open_stream(url, {"Last-Event-ID": last_id}) as stream:
        await asyncio.to_thread(publish, topics[-1], data="after")
        [(_, topic, data)] = await next_events(stream, 1)
        assert (topic, data) == (topics[-1], "after")


async def test_long_poll_since_takes_the_composite_id(
    cluster_server: UvicornServer, cluster_settings: RedisClusterServers
) -> None:
    cluster = cluster_settings
    topics = [t for ts in topics_per_shard(cluster).values() for t in ts]
    query = "&".join(f"topic={t}" for t in topics)
    since = current_id(topics)
    assert since.startswith("c")
    await asyncio.to_thread(publish, topics[1], data=1)
    await asyncio.to_thread(publish, topics[2], data=2)
    answer = httpx.get(f"{cluster_server.url}/events/poll/?{query}&since={since}", timeout=10).json()
    assert [(e["topic"], e["data"]) for e in answer["events"]] == [(topics[1], 1), (topics[2], 2)] or [
        (e["topic"], e["data"]) for e in answer["events"]
    ] == [(topics[2], 2), (topics[1], 1)]
    assert answer["last_id"] == answer["events"][-1]["id"]
    # Nothing new: times out with the same position.
    quiet = httpx.get(f"{cluster_server.url}/events/poll/?{query}&since={answer['last_id']}", timeout=10).json()
    assert quiet == {"events": [], "last_id": answer["last_id"]}
    # The stream resumes from a long-poll id too.
    await asyncio.to_thread(publish, topics[0], data=0)
    async with open_stream(stream_url(cluster_server, topics), {"Last-Event-ID": answer["last_id"]}) as stream:
        assert [(t, d) for _, t, d in await next_events(stream, 1)] == [(topics[0], 0)]


async def test_unknown_or_foreign_ids_get_a_reset_and_malformed_ones_a_400(
    cluster_server: UvicornServer, cluster_settings: RedisClusterServers
) -> None:
    cluster = cluster_settings
    [topic] = next(iter(topics_per_shard(cluster).values()))
    await asyncio.to_thread(publish, topic)
    url = stream_url(cluster_server, [topic])
    # A single-node id, or a composite naming another group: unknown here.
    foreign = format_positions({(group_of(topic) + 1) % 128: (1700000000000, 0)})
    for last_id in ["1700000000000-0", foreign]:
        async with open_stream(url, {"Last-Event-ID": last_id}) as stream:
            frame = await stream.next_event()
            assert frame.event == "reset"
            assert frame.json == {"topic": None, "data": {"reason": "unknown-id"}}
            assert frame.id is not None and group_of(topic) in parse_positions(frame.id)
    for bad in ["c", "cZ.01", "c1.0a0.0a0", "x1-2"]:
        response = httpx.get(f"{cluster_server.url}/events/poll/?topic={topic}&since={bad}", timeout=5)
        assert (response.status_code, response.json()["code"]) == (400, "invalid_id"), bad


@pytest.mark.slow
async def test_two_workers_deliver_each_event_once_to_every_client(
    start_server: Callable[..., UvicornServer], cluster_settings: RedisClusterServers
) -> None:
    cluster = cluster_settings
    srv = start_server({"REDIS_URL": cluster.url}, args=["--workers", "2"])
    prefix = srv.env["EVENTS_PREFIX"]
    topics = [t for ts in topics_per_shard(cluster).values() for t in ts]
    start = current_id(topics)
    streams = []
    try:
        for _ in range(20):
            burst = await asyncio.gather(
                *(open_raw_stream(stream_url(srv, topics), {"Last-Event-ID": start}) for _ in range(10))
            )
            streams += burst
            await asyncio.gather(*(s.read_until(b"stream open") for s in burst))
            await wait_subscribed(cluster, srv, topics)
            if all(shard_subscribers(cluster, t, prefix) == 2 for t in topics):
                break
        assert all(shard_subscribers(cluster, t, prefix) == 2 for t in topics), "one worker never got a stream"
        # Each event under its own name: a worker that falls behind merges
        # invalidations of one topic and name (docs/howto/overload.md).
        published = [(t, await asyncio.to_thread(publish, t, data=i, event=f"e{i}")) for i in range(10) for t in topics]
        marker = [f'"data": "end-{t}"'.encode() for t in topics]
        for t in topics:
            await asyncio.to_thread(publish, t, data=f"end-{t}")
        for s in streams:
            for m in marker:
                await s.read_until(m, timeout=10)
        for s in streams:
            frames = [block for block in s.data.split(b"\n\n") if b"\ndata: " in block or block.startswith(b"data: ")]
            payloads = Counter(block.split(b"data: ", 1)[1] for block in frames)
            assert len(frames) == len(published) + len(topics), "an event was lost or duplicated"
            assert all(n == 1 for n in payloads.values()), "an event was delivered twice"
    finally:
        for s in streams:
            await s.close()


async def test_long_replays_come_in_bounded_batches_without_loss(
    cluster_server: UvicornServer, cluster_settings: RedisClusterServers
) -> None:
    """More than one history batch (events.backends.history.BATCH) on a group, on the stream and the long-poll."""
    from events.backends.history import BATCH

    cluster = cluster_settings
    [[topic], [other], *_] = topics_per_shard(cluster).values()
    start = current_id([topic, other])
    count = BATCH * 2 + 50
    for i in range(count):
        await asyncio.to_thread(publish, topic, data=i)
    await asyncio.to_thread(publish, other, data="other")
    async with open_stream(stream_url(cluster_server, [topic, other]), {"Last-Event-ID": start}) as stream:
        got = await next_events(stream, count + 1, timeout=20)
    assert sorted((t, d) for _, t, d in got if t == other) == [(other, "other")]
    assert [d for _, t, d in got if t == topic] == list(range(count))
    # The long-poll answers at most 100 at a time and goes on from its last_id.
    query = f"topic={topic}&topic={other}"
    since = start
    seen: list[tuple[str, object]] = []
    while len(seen) < count + 1:
        answer = httpx.get(f"{cluster_server.url}/events/poll/?{query}&since={since}", timeout=10).json()
        assert 0 < len(answer["events"]) <= 100
        seen += [(e["topic"], e["data"]) for e in answer["events"]]
        since = answer["last_id"]
    assert [d for t, d in seen if t == topic] == list(range(count))
    assert [d for t, d in seen if t == other] == ["other"]
