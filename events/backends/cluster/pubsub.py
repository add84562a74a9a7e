"""The hub's Redis side in cluster mode: the shared reader once per primary, and the slot bookkeeping.

A topic's shard channel lives on the primary that owns its slot group's
slot. The hub keeps at most one pub/sub connection per primary: a
:class:`NodeReader`, which is the single node's :class:`~events.backends.reader.Reader`
(same subscriptions, confirmations, gap filling, forged-id defence, safety
net and backoff) speaking sharded pub/sub (:class:`ClusterDialect`), with its
own task, so a slow or dead shard never delays the others. Each slot group is
one of the reader's *streams*: its watermark is kept here, shared by the
readers, so a group that moves to another primary is caught up from where
it was.

This module adds only what a cluster needs on top: which reader carries
which group (``_groups``), and the supervisor (``read_forever``) that keeps
the slot map and moves a group when its slot has moved (the node says so by
unsubscribing us, or the periodic check finds it elsewhere) or its node
failed and a replica took over. Clients stay attached through all of this;
nobody re-subscribes by hand.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Collection
from typing import Any

import redis.asyncio
from redis.asyncio.client import PubSub

from ... import metrics
from ...conf import conf
from ...core.ids import EventKey, format_key
from ...core.messages import Message
from ...core.tasks import cancel_and_wait, wait_set
from ...exceptions import HubUnavailable
from ..connection import describe_error
from ..errors import REDIS_ERRORS
from ..history import Batch
from ..reader import BACKOFF_MAX, BACKOFF_MIN, WARN_EVERY, HubSide, Reader, StreamKey
from ..watermark import Watermark
from .connection import node_client, seeds
from .history import newest_of, read_group
from .layout import SLOTS, channel_name, group_of, group_slot, history_key, topic_of
from .messages import GroupMessage

logger = logging.getLogger("events.hub")

Address = tuple[str, int]

# How often the supervisor re-reads the slot map while all is well (a slot
# moved by a reshard is normally noticed at once, by the node's sunsubscribe).
TOPOLOGY_CHECK = 5.0
# Seconds a client waits for the reader of a primary new to this worker to connect.
CONNECT_WAIT = 2.0
_FAILED: tuple[type[Exception], ...] = (HubUnavailable, *REDIS_ERRORS)


class ClusterDialect:
    """Sharded pub/sub (``SSUBSCRIBE``), one history stream per slot group (the stream key is the group)."""

    MESSAGE = "smessage"
    SUBSCRIBED = "ssubscribe"
    UNSUBSCRIBED = "sunsubscribe"

    def __init__(self) -> None:
        self._prefix = channel_name("", conf.PREFIX).rpartition("{")[0].encode()

    def topic_of(self, channel: bytes) -> str:
        return topic_of(channel, self._prefix)

    def stream_of(self, topic: str) -> int:
        return group_of(topic)

    def message(self, topic: str, data: bytes) -> Message:
        message = GroupMessage.from_pubsub(topic, data)
        assert isinstance(message, GroupMessage)
        message.group = group_of(topic)
        return message

    async def subscribe(self, pubsub: PubSub, topics: list[str]) -> None:
        for channels in _by_slot(topics):
            await pubsub.ssubscribe(*channels)

    async def unsubscribe(self, pubsub: PubSub, topics: list[str]) -> None:
        for channels in _by_slot(topics):
            await pubsub.sunsubscribe(*channels)

    async def measure(
        self, client: redis.asyncio.Redis, streams: Collection[StreamKey]
    ) -> tuple[int, dict[StreamKey, EventKey]]:
        """The node's clock and its groups' newest ids: one round trip (a pipeline)."""
        groups = [stream for stream in streams if isinstance(stream, int)]
        pipe = client.pipeline(transaction=False)
        pipe.time()
        for group in groups:
            pipe.xrevrange(history_key(group), "+", "-", count=1)
        (seconds, microseconds), *replies = await pipe.execute()
        newest: dict[StreamKey, EventKey] = {group: key for group, key in newest_of(groups, replies).items()}
        return seconds * 1000 + microseconds // 1000, newest

    async def read_after(
        self, client: redis.asyncio.Redis, stream: StreamKey, since: EventKey, topics: list[str]
    ) -> AsyncGenerator[Batch, None]:
        assert isinstance(stream, int)
        position: EventKey = since
        while True:
            batch = await read_group(stream, position, topics, node=client)
            if batch.reset_reason is not None:
                yield Batch(
                    format_key(batch.last_key),
                    format_key(batch.last_key),
                    reset=self.reset(stream, batch.last_key, batch.reset_reason),
                )
                return
            events: list[Message] = list(batch.events)
            yield Batch(format_key(batch.last_key), format_key(batch.position), batch.more, events=events)
            if not batch.more:
                return
            position = batch.position

    def reset(self, stream: StreamKey, key: EventKey, reason: str) -> Message:
        assert isinstance(stream, int)
        return GroupMessage.in_group(Message.reset(format_key(key), reason), stream)


class NodeReader(Reader):
    """The shared reader on one primary: carries the topics of the groups assigned to it."""

    def __init__(self, owner: ShardedPubSub, address: Address) -> None:
        super().__init__(
            owner.hub,
            owner.dialect,
            node_client(*address),
            node_client(*address, timeout=5.0),
            owner.watermarks,
            name=f"Redis Cluster node {address[0]}:{address[1]}",
        )
        self.owner = owner
        self.address = address
        # The topics this reader should carry; the owner adds and removes them.
        self.topics: set[str] = set()
        self.task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self.read_forever(), name=f"events-hub-reader-{address[0]}:{address[1]}"
        )

    def wanted_topics(self) -> Collection[str]:
        return self.topics

    def _dropped(self, topic: str) -> None:
        self.owner.group_lost(group_of(topic), "its slot moved")

    def _state_changed(self) -> None:
        self.owner.state_changed(self)

    def _log_level(self, lost: bool) -> int:
        # Retries against a node that is still down (until its replica is
        # promoted) are not worth a warning each.
        return logging.WARNING if lost else logging.DEBUG

    async def aclose(self) -> None:
        await cancel_and_wait(self.task)
        await super().aclose()


class _Group:
    """A slot group this worker has topics in: the reader carrying them, and which."""

    __slots__ = ("reader", "topics")

    def __init__(self, reader: NodeReader) -> None:
        self.reader = reader
        self.topics: set[str] = set()


class ShardedPubSub:
    """The hub's connection in cluster mode: one :class:`NodeReader` per primary, and the supervisor."""

    def __init__(self, hub: HubSide) -> None:
        self.hub = hub
        self.dialect = ClusterDialect()
        # Per slot group, shared by the readers (a group keeps its position when it moves).
        self.watermarks: dict[StreamKey, Watermark] = {}
        self._seeds: list[Address] = list(seeds())
        self._slots: list[Address | None] = []
        self._known: list[Address] = []
        self._readers: dict[Address, NodeReader] = {}
        self._groups: dict[int, _Group] = {}
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()

    # The hub's interface ----------------------------------------------

    @property
    def connected(self) -> bool:
        """The slot map is known, and some primary carrying topics (if any) is connected."""
        if not self._ready.is_set():
            return False
        carrying = [reader for reader in self._readers.values() if reader.topics]
        return not carrying or any(reader.connected for reader in carrying)

    async def wait_connected(self, timeout: float) -> None:
        """Return once the slot map is known; TimeoutError after ``timeout`` seconds."""
        if not await wait_set(self._ready, timeout):
            raise TimeoutError

    async def subscribe(self, topics: frozenset[str]) -> list[asyncio.Future[None]]:
        by_reader: dict[NodeReader, list[str]] = {}
        for topic in topics:
            group = self._group(group_of(topic))
            group.topics.add(topic)
            group.reader.topics.add(topic)
            by_reader.setdefault(group.reader, []).append(topic)
        futures: list[asyncio.Future[None]] = []
        for reader, wanted in by_reader.items():
            if not reader.connected:
                try:
                    await reader.wait_connected(CONNECT_WAIT)
                except TimeoutError:
                    raise HubUnavailable(f"{reader.name} is unreachable") from None
            futures += await reader.subscribe(frozenset(wanted))
        return futures

    def release(self, topics: list[str]) -> None:
        wanted = self.hub.wanted_topics()
        by_reader: dict[NodeReader, list[str]] = {}
        for topic in topics:
            number = group_of(topic)
            group = self._groups.get(number)
            if topic in wanted or group is None or topic not in group.topics:
                continue
            group.topics.discard(topic)
            group.reader.topics.discard(topic)
            if not group.topics:
                del self._groups[number]
            by_reader.setdefault(group.reader, []).append(topic)
        for reader, released in by_reader.items():
            reader.release(released)

    async def aclose(self) -> None:
        for reader in list(self._readers.values()):
            await reader.aclose()
        self._readers.clear()

    async def read_forever(self) -> None:
        """The supervisor: keep the slot map, and every wanted topic on the reader of its slot's owner."""
        delay = BACKOFF_MIN
        loop = asyncio.get_running_loop()
        warned_at: float | None = None
        while True:
            self._wake.clear()
            healthy = False
            try:
                await self._refresh_slots()
                self._ready.set()
                healthy = await self._reconcile()
            except REDIS_ERRORS as exc:
                self._ready.clear()
                if warned_at is None or loop.time() - warned_at >= WARN_EVERY:
                    warned_at = loop.time()
                    logger.warning("events hub: Redis Cluster topology check failed (%s)", describe_error(exc))
            except Exception:
                # Never end the supervisor: the hub would serve on a stale slot map for good.
                logger.exception("events hub: unexpected error in the Redis Cluster supervisor; retrying")
            self._update_metrics()
            if healthy:
                warned_at = None
                delay = BACKOFF_MIN
                await wait_set(self._wake, TOPOLOGY_CHECK)
            else:
                await asyncio.sleep(delay * (1 + random.random() / 2))
                delay = min(delay * 2, BACKOFF_MAX)

    # What the readers tell ---------------------------------------------

    def state_changed(self, reader: NodeReader) -> None:
        self._update_metrics()
        if not reader.connected and reader.topics:
            self._wake.set()  # its node may have failed: look for the new owner

    def group_lost(self, number: int, why: str) -> None:
        """Take group ``number`` off its reader; the supervisor puts it where its slot is now."""
        group = self._groups.pop(number, None)
        if group is None:
            return
        group.reader.topics.difference_update(group.topics)
        group.reader.forget(list(group.topics), "the topic's shard changed")
        logger.info("events hub: group %d moves (%s); re-subscribing %d topics", number, why, len(group.topics))
        self._wake.set()

    # Topology ---------------------------------------------------------

    def _group(self, number: int) -> _Group:
        group = self._groups.get(number)
        if group is None:
            address = self._owner(number)
            if address is None:
                raise HubUnavailable("the topic's Redis Cluster shard is unavailable")
            group = self._groups[number] = _Group(self._reader(address))
        return group

    async def _refresh_slots(self) -> None:
        candidates = list(dict.fromkeys([*self._known, *self._seeds]))
        last_error: BaseException | None = None
        for address in candidates:
            client = node_client(*address, timeout=2.0)
            try:
                ranges = await client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
            except REDIS_ERRORS as exc:
                last_error = exc
                continue
            finally:
                await client.aclose()
            slots: list[Address | None] = [None] * SLOTS
            known: list[Address] = []
            for entry in ranges:
                start, end, primary, *replicas = entry
                owner = (_text(primary[0]) or address[0], int(primary[1]))
                for slot in range(int(start), int(end) + 1):
                    slots[slot] = owner
                known += [owner, *((_text(r[0]) or address[0], int(r[1])) for r in replicas)]
            self._slots = slots
            self._known = list(dict.fromkeys(known))
            return
        raise redis.ConnectionError(f"no Redis Cluster node answered CLUSTER SLOTS ({last_error})")

    def _owner(self, group: int) -> Address | None:
        return self._slots[group_slot(group)] if self._slots else None

    def _reader(self, address: Address) -> NodeReader:
        reader = self._readers.get(address)
        if reader is None:
            reader = self._readers[address] = NodeReader(self, address)
        return reader

    async def _reconcile(self) -> bool:
        """Put every wanted topic on its slot owner's reader; True when all are there and connected."""
        for number, group in list(self._groups.items()):
            if self._owner(number) != group.reader.address:
                self.group_lost(number, "its slot moved" if group.reader.connected else "its node failed")
        healthy = True
        for topic in list(self.hub.wanted_topics()):
            number = group_of(topic)
            known = self._groups.get(number)
            if known is not None and topic in known.topics:
                continue
            try:
                group = self._group(number)
            except HubUnavailable:
                healthy = False
                continue
            group.topics.add(topic)
            group.reader.topics.add(topic)
        for reader in list(self._readers.values()):
            # Also topics assigned while the reader was connecting (it subscribed those it knew then).
            try:
                if reader.topics and not await reader.subscribe_wanted():
                    healthy = False  # it subscribes them all on connecting
            except _FAILED:
                healthy = False
        primaries = {address for address in self._slots if address is not None}
        for address, reader in list(self._readers.items()):
            if address not in primaries and not reader.topics:
                del self._readers[address]
                await reader.aclose()
        return healthy

    def _update_metrics(self) -> None:
        metrics.HUB_CONNECTED.set(1 if self.connected else 0)
        metrics.TOPICS_SUBSCRIBED.set(sum(len(group.topics) for group in self._groups.values()))


def _by_slot(topics: list[str]) -> list[list[str]]:
    """Shard channel names of ``topics``, one list per group: one SSUBSCRIBE may name one slot only."""
    groups: dict[int, list[str]] = {}
    for topic in topics:
        groups.setdefault(group_of(topic), []).append(channel_name(topic))
    return list(groups.values())


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
