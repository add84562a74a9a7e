"""One behavioural suite for both backends: every guarantee holds on a single Redis and on a Redis Cluster.

Each test runs against a redis-server, a Sentinel-watched pair (a primary,
a replica, three sentinels) and a 3x2 Redis Cluster, all of this module's
own (they are stopped, their connections killed), each with a uvicorn worker
of its own. The order matters only for the last test,
which stops every node and starts them again.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis
from django.conf import settings
from django.template import Context, Template
from django.test import override_settings

from events import PublishError, acurrent_id, apublish, current_id, publish
from events.backends.active import get_backend, get_hub
from events.backends.cluster.connection import close_sync_clusters
from events.backends.cluster.layout import channel_name as shard_channel_name
from events.backends.cluster.layout import group_of, group_slot
from events.backends.connection import channel_name, close_sync_clients
from events.backends.history import BATCH
from events.core.ids import MAX_ID

from .conftest import SERVER_ENV
from .redis_ha import SentinelSetup, start_sentinel_setup
from .servers import (
    RedisClusterServers,
    RedisServer,
    UvicornServer,
    free_port,
    start_redis_cluster,
    start_redis_server,
    start_uvicorn,
    wait_for,
)
from .sse import open_stream
from .waits import opened

pytestmark = pytest.mark.slow

DEADLINE = 15.0


@dataclass
class Backend:
    """A Redis of either kind, the uvicorn worker on it, and what the tests do to it from outside."""

    kind: str
    url: str
    server: UvicornServer
    single: RedisServer | None = None
    cluster: RedisClusterServers | None = None
    sentinel: SentinelSetup | None = None

    def clients(self) -> list[redis.Redis]:
        if self.single is not None:
            return [self.single.client()]
        if self.sentinel is not None:
            return [self.sentinel.primary.client(), self.sentinel.replica.client()]
        assert self.cluster is not None
        return [node.client() for node in self.cluster.nodes]

    def kill_pubsub_connections(self) -> None:
        """``CLIENT KILL TYPE pubsub`` on every node: the hub's readers lose their connections."""
        for client in self.clients():
            with client:
                client.client_kill_filter(_type="pubsub")

    def publish_raw(self, topic: str, body: bytes) -> None:
        """A message on ``topic``'s live channel, as someone with PUBLISH rights could send it."""
        prefix = self.server.env["EVENTS_PREFIX"]
        if self.single is not None:
            with self.single.client() as client:
                client.publish(channel_name(topic, prefix), body)
            return
        if self.sentinel is not None:
            with self.sentinel.primary.client() as client:
                client.publish(channel_name(topic, prefix), body)
            return
        assert self.cluster is not None
        with self.cluster.owner(group_slot(group_of(topic))).client() as client:
            client.execute_command("SPUBLISH", shard_channel_name(topic, prefix), body)

    def stop_all(self) -> None:
        if self.sentinel is not None:
            self.sentinel.replica.stop()
            self.sentinel.primary.stop()
        elif self.single is not None:
            self.single.stop()
        else:
            assert self.cluster is not None
            for node in self.cluster.nodes:
                node.stop()

    def start_all(self) -> None:
        if self.sentinel is not None:
            self.sentinel.primary.start()
            self.sentinel.replica.start()
            return
        if self.single is not None:
            self.single.start()
            return
        cluster = self.cluster
        assert cluster is not None
        for node in cluster.nodes:
            node.start()
        wait_for(lambda: _answers(cluster) and cluster.all_ok(), 60, "the cluster to be back", interval=0.2)

    def close(self) -> None:
        if self.sentinel is not None:
            self.sentinel.stop()
        if self.single is not None:
            self.single.stop()
        if self.cluster is not None:
            self.cluster.stop()


def _answers(cluster: RedisClusterServers) -> bool:
    try:
        for node in cluster.nodes:
            with node.client() as client:
                client.ping()
    except redis.RedisError:
        return False
    return True


@pytest.fixture(scope="module", params=["single", "sentinel", "cluster"])
def backend(request: pytest.FixtureRequest, events_prefix: str) -> Iterator[Backend]:
    single = start_redis_server(free_port()) if request.param == "single" else None
    sentinel = start_sentinel_setup() if request.param == "sentinel" else None
    cluster = start_redis_cluster() if request.param == "cluster" else None
    url = next(setup.url for setup in (single, sentinel, cluster) if setup is not None)
    try:
        env = {"REDIS_URL": url, "EVENTS_PREFIX": events_prefix, "EVENTS_METRICS": "1", **SERVER_ENV}
        with start_uvicorn(env) as server:
            yield Backend(request.param, url, server, single, cluster, sentinel)
    finally:
        Backend(request.param, url, None, single, cluster, sentinel).close()  # type: ignore[arg-type]


@pytest.fixture
def app(backend: Backend) -> Iterator[Backend]:
    """The in-process app (publish, current_id, the hub) on ``backend`` too."""
    with override_settings(EVENTS={**settings.EVENTS, "REDIS_URL": backend.url}):
        yield backend
    close_sync_clients()
    close_sync_clusters()


def stream_url(backend: Backend, topic: str) -> str:
    return f"{backend.server.url}/events/stream/?topic={topic}"


async def test_a_gap_longer_than_one_history_batch_is_delivered_once_and_in_order(app: Backend, topic: str) -> None:
    count = 2 * BATCH + 200
    async with open_stream(stream_url(app, topic)) as stream:
        await opened(stream)
        await asyncio.to_thread(publish, topic, data="before")
        assert (await stream.next_event()).json["data"] == "before"
        # The worker frozen while its pub/sub connections die and the events are published.
        os.kill(app.server.pid, signal.SIGSTOP)
        try:
            app.kill_pubsub_connections()
            for n in range(count):
                await asyncio.to_thread(publish, topic, data=n)
        finally:
            os.kill(app.server.pid, signal.SIGCONT)
        got = [(await stream.next_event(timeout=DEADLINE)).json["data"] for _ in range(count)]
        assert got == list(range(count))
        await asyncio.to_thread(publish, topic, data="after")
        assert (await stream.next_event()).json["data"] == "after", "an event came twice"


async def test_a_forged_id_on_the_live_channel_is_skipped_and_later_events_arrive(app: Backend, topic: str) -> None:
    forged_id = MAX_ID.split("-")[0] + "-0"  # 18446744073709551615-0
    async with open_stream(stream_url(app, topic)) as stream:
        await opened(stream)
        await asyncio.to_thread(publish, topic, data="real-1")
        assert (await stream.next_event()).json["data"] == "real-1"
        app.publish_raw(topic, f'{forged_id}\ninvalidate\n"forged"'.encode())
        for n in range(3):
            await asyncio.to_thread(publish, topic, data=f"real-{n + 2}")
            frame = await stream.next_event()
            assert frame.json["data"] == f"real-{n + 2}", frame
            assert forged_id not in (frame.id or "")


async def test_long_polls_answering_and_polling_again_at_once_are_never_refused(
    app: Backend, make_topic: Callable[[], str]
) -> None:
    topics = [make_topic() for _ in range(3)]
    events = 25
    since = await acurrent_id(topics)
    refusals: list[str] = []

    async def poller(http: httpx.AsyncClient, topic: str) -> list[Any]:
        seen: list[Any] = []
        last = since
        while len(seen) < events:
            response = await http.get(f"{app.server.url}/events/poll/", params={"topic": topic, "since": last})
            if response.status_code != 200:
                refusals.append(response.text)
                return seen
            body = response.json()
            seen += [event["data"] for event in body["events"]]
            last = body["last_id"]
        return seen

    async with httpx.AsyncClient(timeout=10) as http:
        polls = [asyncio.ensure_future(poller(http, topic)) for topic in topics for _ in range(4)]
        for n in range(events):
            for topic in topics:
                await apublish(topic, data=n)
            # A publisher's pace, not a synchronisation: the polls answer and re-poll meanwhile.
            await asyncio.sleep(0.02)
        async with asyncio.timeout(30):
            results = await asyncio.gather(*polls)
    assert refusals == []
    assert all(seen == list(range(events)) for seen in results)


async def test_a_topic_released_and_taken_again_within_one_round_trip_stays_live(app: Backend, topic: str) -> None:
    hub = get_hub()
    backend = get_backend()
    for attempt in range(12):
        first = backend.new_subscriber(frozenset({topic}), 100, is_stream=False)
        await hub.attach(first)
        hub.detach(first)  # the UNSUBSCRIBE goes out in the background...
        for _ in range(attempt % 4):
            await asyncio.sleep(0)  # ...and may be on its way: take the topic again
        again = backend.new_subscriber(frozenset({topic}), 100, is_stream=False)
        await hub.attach(again)
        try:
            await apublish(topic, data=attempt)
            async with asyncio.timeout(5):
                while not again.pending:
                    await again.wait()
            assert [json.loads(message.poll_json)["data"] for message in again.take()] == [attempt]
        finally:
            hub.detach(again)


def _tag_config(html: str) -> dict[str, Any]:
    match = re.search(r'<script id="live-events" type="application/json">(.*?)</script>', html, re.S)
    assert match is not None, html
    config: dict[str, Any] = json.loads(match[1])
    return config


async def test_current_id_and_the_tag_without_topics_work_alike(app: Backend, topic: str) -> None:
    backend = get_backend()
    values = [
        await asyncio.to_thread(current_id),
        await asyncio.to_thread(current_id, []),
        await acurrent_id(),
        await acurrent_id([]),
    ]
    assert all(backend.is_valid_id(value) for value in values), values
    html = await asyncio.to_thread(Template("{% load events %}{% live_events %}").render, Context())
    resume = _tag_config(html)["lastEventId"]
    assert resume is not None and backend.is_valid_id(resume)
    # A page rendered without topics resumes from that id and misses nothing.
    await apublish(topic, data="after-render")
    async with open_stream(stream_url(app, topic), {"Last-Event-ID": resume}) as stream:
        frame = await stream.next_event()
        assert (frame.event, frame.json["data"]) == ("invalidate", "after-render")


def _health(srv: UvicornServer) -> httpx.Response:
    return httpx.get(f"{srv.url}/events/health/", timeout=10)


async def test_every_node_down_then_back(app: Backend, topic: str) -> None:
    srv = app.server
    async with open_stream(stream_url(app, topic)) as stream:
        await opened(stream)
        since = await acurrent_id([topic])
        app.stop_all()
        try:
            await asyncio.to_thread(
                wait_for, lambda: _health(srv).json()["hub"] != "connected", DEADLINE, "the hub to notice"
            )
            health = _health(srv)
            assert health.status_code == 503
            assert health.headers["Content-Type"] == "application/json"
            assert health.json()["redis"] is False
            assert health.json()["hub"] == "disconnected"
            metrics = httpx.get(f"{srv.url}/events/metrics/", timeout=10).text
            assert "events_hub_connected 0.0" in metrics

            # publish() fails with PublishError, also with a client that never discovered the cluster.
            with pytest.raises(PublishError):
                await asyncio.to_thread(publish, topic)
            close_sync_clients()
            close_sync_clusters()
            with pytest.raises(PublishError):
                await asyncio.to_thread(publish, topic)
            with pytest.raises(PublishError):
                await apublish(topic)
            # The tag renders, with a null id.
            html = await asyncio.to_thread(Template("{% load events %}{% live_events 'x' %}").render, Context())
            assert _tag_config(html)["lastEventId"] is None

            # Long-polls: 503 JSON with Retry-After, with or without since.
            async with httpx.AsyncClient(timeout=10) as http:
                for params in ({"topic": topic}, {"topic": topic, "since": since}):
                    poll = await http.get(f"{srv.url}/events/poll/", params=params)
                    assert poll.status_code == 503, poll.text
                    assert poll.json()["code"] == "unavailable"
                    assert poll.headers["Retry-After"]
            # A new stream: the retry-able 200 that ends at once.
            async with open_stream(stream_url(app, "other-" + topic)) as refused:
                frames = await refused.until_end(timeout=10)
                assert any("unavailable" in comment for frame in frames for comment in frame.comments), frames
            # The open stream stays open, with heartbeats.
            beats = 0
            while beats < 3:
                frame = await stream.next_frame(timeout=2)
                assert frame is not None, "the stream ended during the outage"
                beats += "heartbeat" in frame.comments
        finally:
            await asyncio.to_thread(app.start_all)

        await asyncio.to_thread(wait_for, lambda: _health(srv).status_code == 200, 30, "health to recover")

        def published() -> str | None:
            try:
                return publish(topic, data="after")
            except PublishError:
                return None

        await asyncio.to_thread(wait_for, published, 30, "publish to work again")
        # Redis came back empty: a reset first (clients re-fetch), then live again.
        frame = await stream.next_event(timeout=DEADLINE)
        if frame.event == "reset":
            frame = await stream.next_event(timeout=DEADLINE)
        assert frame.json["data"] == "after"
