"""Redis Cluster faults: a primary killed mid-stream, a slot moved while events flow.

The failover test starts its own cluster (3 primaries, 1 replica each, node
timeout 2 s, ``cluster-require-full-coverage no``) since it kills a node.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.test import override_settings

from events import PublishError, current_id, publish
from events.backends.cluster.connection import close_sync_clusters
from events.backends.cluster.layout import group_of, group_slot

from .cluster import shard_subscribers, topics_per_shard
from .servers import RedisClusterServers, UvicornServer, start_redis_cluster, wait_for
from .sse import RawStream, open_raw_stream, open_stream

pytestmark = pytest.mark.slow


@pytest.fixture
def own_cluster() -> Iterator[RedisClusterServers]:
    cluster = start_redis_cluster()
    with override_settings(EVENTS={**settings.EVENTS, "REDIS_URL": cluster.url}):
        yield cluster
    close_sync_clusters()
    cluster.stop()


def events_of(stream: RawStream) -> list[tuple[str, str, Any]]:
    """``(event, topic, data)`` of every event received so far (frames never span chunks)."""
    found = []
    event = "message"
    for line in stream.data.split(b"\n"):
        if line.startswith(b"event: "):
            event = line[7:].decode()
        elif line.startswith(b"data: "):
            body = json.loads(line[6:])
            found.append((event, body["topic"], body["data"]))
            event = "message"
    return found


def data_of(stream: RawStream, topic: str) -> list[Any]:
    return [data for event, t, data in events_of(stream) if t == topic and event == "invalidate"]


async def all_receive(streams: list[RawStream], marker: str, timeout: float) -> None:
    needle = json.dumps(marker).encode()
    await asyncio.gather(*(s.read_until(needle, timeout) for s in streams))


async def test_a_killed_primary_fails_over_without_losing_streams_or_delaying_other_shards(
    own_cluster: RedisClusterServers, start_server: Callable[..., UvicornServer]
) -> None:
    cluster = own_cluster
    srv = start_server({"REDIS_URL": cluster.url}, args=["--workers", "2"])
    prefix = srv.env["EVENTS_PREFIX"]
    shards = topics_per_shard(cluster, per_shard=2)
    topics = [t for ts in shards.values() for t in ts]
    query = "&".join(f"topic={t}" for t in topics)
    url = f"{srv.url}/events/stream/?{query}"
    start = current_id(topics)

    # Streams on both workers, every topic subscribed by both.
    streams: list[RawStream] = []
    bystanders: list[RawStream] = []
    for _ in range(20):
        burst = await asyncio.gather(*(open_raw_stream(url, {"Last-Event-ID": start}) for _ in range(6)))
        streams += burst
        await asyncio.gather(*(s.read_until(b"stream open") for s in burst))
        await asyncio.to_thread(
            wait_for, lambda: all(shard_subscribers(cluster, t, prefix) >= 1 for t in topics), 10, "subscribed"
        )
        if all(shard_subscribers(cluster, t, prefix) == 2 for t in topics):
            break
    assert all(shard_subscribers(cluster, t, prefix) == 2 for t in topics), "one worker never got a stream"
    try:
        for topic in topics:
            await asyncio.to_thread(publish, topic, data=f"first-{topic}")
        await all_receive(streams, f"first-{topics[-1]}", 10)

        victim = cluster.owner(group_slot(group_of(topics[0])))
        lost_topic, kept_topic = shards[victim.port]
        healthy = [t for port, ts in shards.items() if port != victim.port for t in ts]
        # Streams on the healthy shards only: the failover is none of their business.
        bystanders += [
            await open_raw_stream(
                f"{srv.url}/events/stream/?" + "&".join(f"topic={t}" for t in healthy),
                {"Last-Event-ID": current_id(healthy)},
            )
            for _ in range(4)
        ]
        await asyncio.gather(*(s.read_until(b"stream open") for s in bystanders))
        # A client away across the failover, resuming from the replica's history.
        away_url = f"{srv.url}/events/stream/?topic={kept_topic}"
        async with open_stream(away_url, {"Last-Event-ID": current_id([kept_topic])}) as away:
            await away.next_frame()
            await asyncio.to_thread(publish, kept_topic, data="seen-by-away")
            away_last = (await away.next_event()).id
        await asyncio.to_thread(publish, kept_topic, data="replicated")
        replica = next(n for n in cluster.nodes if n.alive and n.info("replication").get("master_port") == victim.port)
        with victim.client() as client:
            assert client.execute_command("WAIT", 1, 5000) == 1, "the replica did not acknowledge"
            # Cut the replica off (a wrong masterauth keeps it from syncing
            # again), publish once more (delivered live, never replicated),
            # then kill the primary: the replica lacks an event clients have.
            with replica.client() as replica_client:
                replica_client.config_set("masterauth", "not-the-password")
            client.client_kill_filter(_type="replica")
        await asyncio.to_thread(publish, lost_topic, data="never-replicated")
        await all_receive(streams, "never-replicated", 10)
        victim.kill()
        everyone = streams + bystanders

        # Other shards are served at once during the outage.
        for i in range(5):
            for topic in healthy:
                started = time.monotonic()
                await asyncio.to_thread(publish, topic, data=f"during-{i}-{topic}")
                await all_receive(everyone, f"during-{i}-{topic}", 5)
                assert time.monotonic() - started < 1.0, "a healthy shard was delayed by the failed one"
        with pytest.raises(PublishError):
            await asyncio.to_thread(publish, lost_topic, data="while-down")
        # The workers stay in the load balancer: the other shards serve on.
        assert httpx.get(f"{srv.url}/events/health/", timeout=5).status_code == 200

        # The replica takes over; its shard's topics flow again, nobody re-subscribes by hand.
        await asyncio.to_thread(
            wait_for, lambda: cluster.owner(group_slot(group_of(lost_topic))) is not victim, 30, "a replica promoted"
        )
        close_sync_clusters()  # the test's own publisher forgets the dead node at once

        def publish_after(topic: str) -> str | None:
            try:
                return publish(topic, data=f"after-{topic}")
            except PublishError:
                return None

        await asyncio.to_thread(wait_for, lambda: publish_after(kept_topic), 15, "publish on the new primary")
        await all_receive(streams, f"after-{kept_topic}", 15)
        # The reset stands for everything up to its position; then live again.
        await asyncio.gather(*(s.read_until(b"event: reset", 15) for s in streams))
        await asyncio.to_thread(publish, lost_topic, data=f"after-{lost_topic}")
        await all_receive(streams, f"after-{lost_topic}", 15)

        for s in streams:
            assert b"\r\n0\r\n\r\n" not in s.data, "a stream ended"
            got = events_of(s)
            # The event the replica never had: the group's clients get a reset.
            resets = [i for i, (event, _, _) in enumerate(got) if event == "reset"]
            assert len(resets) == 1, got[-12:]
            assert got[resets[0]][2] == {"reason": "unknown-id"}
            # Everything else exactly once, in order per topic.
            for topic in healthy:
                assert data_of(s, topic) == [f"first-{topic}"] + [f"during-{i}-{topic}" for i in range(5)]
            assert data_of(s, kept_topic)[-1] == f"after-{kept_topic}"
            assert data_of(s, kept_topic).count(f"after-{kept_topic}") == 1
            assert data_of(s, lost_topic) == [f"first-{lost_topic}", "never-replicated", f"after-{lost_topic}"]

        for s in bystanders:
            assert b"event: reset" not in s.data, "a client of the healthy shards was reset"
            for topic in healthy:
                assert data_of(s, topic) == [f"during-{i}-{topic}" for i in range(5)]

        # The client that was away resumes from the promoted replica's history.
        assert away_last is not None
        async with open_stream(away_url, {"Last-Event-ID": away_last}) as away:
            replay = [(await away.next_event()).json["data"] for _ in range(2)]
        assert replay == ["replicated", f"after-{kept_topic}"]
    except BaseException:
        print(srv.log()[-6000:])
        raise
    finally:
        for s in streams + bystanders:
            await s.close()


def reshard(cluster: RedisClusterServers, source_port: int, target_port: int, slots: int) -> None:
    """``redis-cli --cluster reshard`` of the ``slots`` lowest slots of ``source`` to ``target``."""
    ids = {}
    for node in cluster.primaries():
        with node.client() as client:
            ids[node.port] = client.execute_command("CLUSTER", "MYID").decode()
    done = subprocess.run(
        ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{source_port}", "--cluster-from", ids[source_port],
         "--cluster-to", ids[target_port], "--cluster-slots", str(slots), "--cluster-yes"],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout.decode()[-2000:] + done.stderr.decode()


async def test_moving_the_slot_of_a_live_topic_loses_nothing(
    cluster_server: UvicornServer, cluster_settings: RedisClusterServers
) -> None:
    cluster = cluster_settings
    # Group 0's slot is among the lowest slots of whichever primary owns it,
    # so a reshard of a few hundred slots from that primary moves it.
    topic = next(t for t in (f"moving-{n}" for n in range(100000)) if group_of(t) == 0)
    slot = group_slot(0)
    source = cluster.owner(slot)
    ranges = cluster.slots()
    first = min(start for start, end, port in ranges if port == source.port)
    assert 0 <= slot - first < 300, "pick a group among the source's lowest slots"
    target = next(node for node in cluster.primaries() if node.port != source.port)

    published: list[str] = []
    failures: list[Exception] = []
    stop = threading.Event()

    def publisher() -> None:
        n = 0
        while not stop.is_set():
            try:
                published.append(publish(topic, data=n))
                n += 1
            except PublishError as exc:
                failures.append(exc)
            time.sleep(0.005)

    async with open_stream(f"{cluster_server.url}/events/stream/?topic={topic}") as stream:
        await stream.next_frame()
        await asyncio.to_thread(
            wait_for, lambda: shard_subscribers(cluster, topic, cluster_server.env["EVENTS_PREFIX"]) == 1, 10, "sub"
        )
        thread = threading.Thread(target=publisher)
        thread.start()
        try:
            await asyncio.to_thread(wait_for, lambda: len(published) > 20, 10, "events flowing")
            await asyncio.to_thread(reshard, cluster, source.port, target.port, slot - first + 1)
            assert cluster.owner(slot) is target
            await asyncio.to_thread(wait_for, lambda: len(published) > 40 + len(published) // 2, 10, "more events")
        finally:
            stop.set()
            thread.join(10)
        # Every event publish() returned, exactly once and in order.
        ids: list[int] = []
        while len(ids) < len(published):
            frame = await stream.next_event(timeout=10)
            ids.append(frame.json["data"])
        assert ids == list(range(len(published)))
        assert failures == [], f"publish failed during the reshard: {failures[:3]}"
        # And the subscription followed the slot.
        assert shard_subscribers(cluster, topic, cluster_server.env["EVENTS_PREFIX"]) == 1
