"""The hub's Redis side in cluster mode: sharded pub/sub, one connection per primary.

A topic's shard channel lives on the primary that owns its group's slot. The
hub keeps at most one pub/sub connection per primary (a :class:`NodeReader`,
with its own reader task), so a slow or dead shard never delays the others:
each connection is read on its own, never polled in turn.

Per slot group the hub remembers two ids:

- ``seen``: the newest event handed to clients (live duplicates are dropped);
- ``covered``: every event up to here on the subscribed topics was handled.
  It advances with ``seen`` and, while idle, like the single-node hub: the
  reader reads the groups' newest ids, then PINGs; the PONG proves every
  message published before the read has arrived.

A group is *established* on a reader when the SSUBSCRIBEs of its topics are
confirmed and, if it was lost before, the gap after ``covered`` has been read
from the group's history (a ``reset`` to its clients where the history cannot
tell: the shard lost its data, or the replica that took over had not received
the events yet). Live messages of a group being established wait in a bounded
buffer behind the gap.

A group is *lost* when its reader's connection fails (a dead primary), or when
the node unsubscribes us by itself (Redis 7 sends ``sunsubscribe`` when a slot
moves away), or when the periodic topology check finds its slot elsewhere.
The supervisor task (``read_forever``) then finds the slot's new owner (``CLUSTER
SLOTS``), with capped backoff while there is none, and establishes the group
there. Clients stay attached through all of this; nobody re-subscribes by hand.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.client import PubSub

from ... import metrics
from ...conf import conf
from ...core.ids import EventKey, format_key
from ...core.messages import Message, skip_malformed
from ...core.tasks import cancel_and_wait, wait_set
from ...exceptions import HubUnavailable
from ..confirmations import Confirmations
from ..connection import describe_error
from ..reader import HubSide
from .connection import node_client, seeds
from .history import current_positions, read_group
from .layout import SLOTS, channel_name, group_of, group_slot, topic_of
from .messages import GroupMessage

logger = logging.getLogger("events.hub")

Address = tuple[str, int]

IDLE_PING = 5.0
# How often the supervisor re-reads the slot map while all is well (a slot
# moved by a reshard is normally noticed at once, by the node's sunsubscribe).
TOPOLOGY_CHECK = 5.0
BACKOFF_MIN = 0.1
BACKOFF_MAX = 1.0
# Live messages held per group while its gap is read; beyond, the group's
# clients get a reset (overflow) instead.
FILL_BUFFER = 10000


class NodeReader:
    """One primary's pub/sub connection, the topics subscribed on it, and its reader task."""

    def __init__(self, owner: ShardedPubSub, address: Address) -> None:
        self.owner = owner
        self.address = address
        # Topics with an SSUBSCRIBE sent (or to send on connect) and no SUNSUBSCRIBE since.
        self.topics: set[str] = set()
        self._confirmations = Confirmations()
        self._client = node_client(*address)
        self._pubsub: PubSub | None = None
        self._lock = asyncio.Lock()
        self.dead = False
        self.task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self._run(), name=f"events-hub-reader-{address[0]}:{address[1]}"
        )

    # Subscriptions ----------------------------------------------------

    def expect(self, topics: list[str]) -> list[asyncio.Future[None]]:
        """Record ``topics`` as subscribed here; return the futures their confirmations resolve."""
        self.topics.update(topics)
        return [self._confirmations.expect(topic) for topic in topics]

    async def send_subscribe(self, topics: list[str]) -> None:
        """SSUBSCRIBE now if connected (else the reader does on connecting)."""
        async with self._lock:
            if self._pubsub is not None and not self.dead:
                await _ssubscribe(self._pubsub, topics)

    def confirmation(self, topic: str) -> asyncio.Future[None] | None:
        return self._confirmations.latest(topic)

    async def unsubscribe(self, topics: list[str]) -> None:
        self.topics.difference_update(topics)
        async with self._lock:
            if self._pubsub is not None and not self.dead:
                try:
                    for channels in _by_slot(topics):
                        await self._pubsub.sunsubscribe(*channels)
                except (redis.RedisError, OSError):
                    pass  # the connection is going; nothing to unsubscribe then

    def forget(self, topics: list[str]) -> None:
        """Drop topics whose group left this reader (their slot moved, or the node failed)."""
        self.topics.difference_update(topics)
        self._confirmations.fail("the topic's shard changed", topics)

    # The reader task --------------------------------------------------

    async def _run(self) -> None:
        try:
            pubsub = self._client.pubsub()
            async with self._lock:
                await pubsub.connect()  # type: ignore[no-untyped-call]
                self._pubsub = pubsub
                await _ssubscribe(pubsub, list(self.topics))
            await self._read_loop(pubsub)
        except (redis.RedisError, OSError, TimeoutError) as exc:
            # Retries against a node that is still down (until its replica is
            # promoted) are not worth a warning each.
            log = logger.warning if self._pubsub is not None else logger.debug
            log("events hub: Redis Cluster node %s:%d pub/sub failed (%s)", *self.address, describe_error(exc))
        finally:
            self.dead = True
            self._confirmations.fail("Redis Cluster node unreachable")
            self.owner.reader_lost(self)
            try:
                await self._client.aclose()
            except (redis.RedisError, OSError):
                pass

    async def _read_loop(self, pubsub: PubSub) -> None:
        prefix = channel_name("", self.owner.prefix).rpartition("{")[0].encode()
        watermark: dict[int, tuple[int, EventKey]] | None = None
        while True:
            raw = await pubsub.get_message(timeout=IDLE_PING)
            if raw is None:
                if watermark is not None:
                    raise TimeoutError("no answer to PING")
                watermark = await self.owner.read_watermark(self)
                await pubsub.ping()
                continue
            kind = raw["type"]
            if kind == "smessage":
                topic = topic_of(raw["channel"], prefix)
                try:
                    message = GroupMessage.from_pubsub(topic, raw["data"])
                except ValueError as exc:  # foreign data (UnicodeDecodeError is one too)
                    skip_malformed(f"shard channel of topic {topic!r}", exc)
                    continue
                assert isinstance(message, GroupMessage)
                message.group = group_of(topic)
                self.owner.deliver(message)
            elif kind == "ssubscribe":
                self._confirmations.confirm(topic_of(raw["channel"], prefix))
            elif kind == "sunsubscribe":
                topic = topic_of(raw["channel"], prefix)
                if topic in self.topics:
                    # Not asked for: the node gave the slot away (reshard).
                    self.owner.group_lost(group_of(topic), "its slot moved")
            elif kind == "pong" and watermark is not None:
                self.owner.advance(watermark)
                watermark = None

    async def aclose(self) -> None:
        await cancel_and_wait(self.task)


class _Group:
    """What the hub knows about one slot group it has subscriptions in."""

    __slots__ = ("blind", "buffer", "covered", "epoch", "establishing", "reader", "seen")

    def __init__(self) -> None:
        self.reader: NodeReader | None = None
        self.seen: EventKey | None = None
        self.covered: EventKey | None = None
        # Live messages held while the group is being established; None when live.
        self.buffer: list[GroupMessage] | None = None
        self.establishing: asyncio.Task[None] | None = None
        # Lost before any position was known: its clients get a reset once re-established.
        self.blind = False
        # Bumped whenever the group is lost, so late answers about an old
        # subscription are ignored.
        self.epoch = 0


class ShardedPubSub:
    """Same interface to the hub as the single-node ``PubSubConnection``."""

    def __init__(self, hub: HubSide) -> None:
        self.hub = hub
        self.prefix = conf.PREFIX
        self._seeds: list[Address] = list(seeds())
        self._slots: list[Address | None] = []
        self._known: list[Address] = []
        self._readers: dict[Address, NodeReader] = {}
        self._groups: dict[int, _Group] = {}
        # Topic -> the reader it is subscribed on.
        self._assigned: dict[str, NodeReader] = {}
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        # Readers lost so far (the supervisor backs off while they keep failing).
        self._failures = 0
        self._closing = False
        self._to_unsubscribe: set[str] = set()
        self._unsubscribe_task: asyncio.Task[None] | None = None

    # The hub's interface ----------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def wait_connected(self, timeout: float) -> None:
        """Return once the topology is known; TimeoutError after ``timeout`` seconds."""
        if not await wait_set(self._ready, timeout):
            raise TimeoutError

    async def subscribe(self, topics: frozenset[str]) -> list[asyncio.Future[None]]:
        futures: list[asyncio.Future[None]] = []
        new: dict[NodeReader, list[str]] = {}
        for topic in topics:
            reader = self._assigned.get(topic)
            if reader is not None:
                future = reader.confirmation(topic)
                if future is not None:
                    futures.append(future)
                continue
            group = self._groups.get(group_of(topic))
            if group is not None and group.reader is not None and not group.reader.dead:
                # The group's other topics are there: keep it on one reader
                # (if its slot has moved, the supervisor moves the whole group).
                new.setdefault(group.reader, []).append(topic)
                continue
            address = self._owner(group_of(topic))
            if address is None:
                raise HubUnavailable("the topic's Redis Cluster shard is unavailable")
            new.setdefault(self._reader(address), []).append(topic)
        for reader, wanted in new.items():
            futures += self._assign(reader, wanted)
        for reader, wanted in new.items():
            await reader.send_subscribe(wanted)
        return futures

    def release(self, topics: list[str]) -> None:
        self._to_unsubscribe.update(topics)
        if self._unsubscribe_task is None or self._unsubscribe_task.done():
            self._unsubscribe_task = asyncio.get_running_loop().create_task(self._flush_unsubscribes())

    async def aclose(self) -> None:
        self._closing = True
        for task in [self._unsubscribe_task] + [group.establishing for group in self._groups.values()]:
            await cancel_and_wait(task)
        for reader in list(self._readers.values()):
            await reader.aclose()
        self._readers.clear()

    async def read_forever(self) -> None:
        """The supervisor: keep the slot map and every wanted topic's subscription in place."""
        delay = BACKOFF_MIN
        while True:
            failures = self._failures
            healthy = False
            try:
                await self._refresh_slots()
                self._ready.set()
                metrics.HUB_CONNECTED.set(1)
                healthy = await self._reconcile()
            except (redis.RedisError, OSError, TimeoutError, HubUnavailable) as exc:
                logger.warning("events hub: Redis Cluster topology check failed (%s)", describe_error(exc))
            if healthy:
                self._wake.clear()
                await wait_set(self._wake, TOPOLOGY_CHECK)
            # A node that failed again since the last pass (still listed as
            # the owner until its replica is promoted) is retried with backoff.
            if not healthy or self._failures != failures:
                await asyncio.sleep(delay * (1 + random.random() / 2))
                delay = min(delay * 2, BACKOFF_MAX)
            else:
                delay = BACKOFF_MIN

    # Topology ---------------------------------------------------------

    async def _refresh_slots(self) -> None:
        candidates = list(dict.fromkeys([*self._known, *self._seeds]))
        last_error: Exception | None = None
        for address in candidates:
            client = node_client(*address)
            try:
                ranges = await asyncio.wait_for(client.execute_command("CLUSTER", "SLOTS"), 2.0)  # type: ignore[no-untyped-call]
            except (redis.RedisError, OSError, TimeoutError) as exc:
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
        if reader is None or reader.dead:
            reader = self._readers[address] = NodeReader(self, address)
        return reader

    async def _reconcile(self) -> bool:
        """Subscribe every wanted topic on its slot's owner; True when all are in place."""
        for group_number, group in list(self._groups.items()):
            owner = self._owner(group_number)
            if group.reader is not None and (group.reader.dead or group.reader.address != owner):
                self.group_lost(group_number, "its slot moved" if not group.reader.dead else "its node failed")
        missing: dict[Address, list[str]] = {}
        for topic in list(self.hub.wanted_topics()):
            if topic in self._assigned:
                continue
            owner = self._owner(group_of(topic))
            if owner is None:
                return False
            missing.setdefault(owner, []).append(topic)
        assigned = [(self._reader(address), topics) for address, topics in missing.items()]
        for reader, topics in assigned:
            self._assign(reader, topics)
        for reader, topics in assigned:
            await reader.send_subscribe(topics)
        return not any(reader.dead for reader in self._readers.values() if reader.topics)

    # Groups -----------------------------------------------------------

    def _assign(self, reader: NodeReader, topics: list[str]) -> list[asyncio.Future[None]]:
        """Subscribe ``topics`` on ``reader`` (sent by the caller); start establishing groups new there."""
        joining: dict[int, list[str]] = {}
        for topic in topics:
            self._assigned[topic] = reader
            group_number = group_of(topic)
            group = self._groups.setdefault(group_number, _Group())
            if group.reader is not reader:
                group.reader = reader
                group.buffer = []
                joining.setdefault(group_number, [])
            if group_number in joining:
                joining[group_number].append(topic)
        metrics.TOPICS_SUBSCRIBED.set(len(self._assigned))
        futures = reader.expect(topics)
        by_topic = dict(zip(topics, futures, strict=True))
        for group_number, group_topics in joining.items():
            group = self._groups[group_number]
            group.establishing = asyncio.get_running_loop().create_task(
                self._establish(group_number, group.epoch, [by_topic[topic] for topic in group_topics]),
                name=f"events-hub-group-{group_number}",
            )
        return futures

    async def _establish(self, group_number: int, epoch: int, confirmations: list[asyncio.Future[None]]) -> None:
        group = self._groups[group_number]
        try:
            await asyncio.gather(*confirmations)
        except HubUnavailable:
            return  # the reader failed; the supervisor will try again
        delay = BACKOFF_MIN
        while group.epoch == epoch:
            try:
                if group.covered is None:
                    [(_, last)] = (await current_positions([group_number])).items()
                    group.covered = last
                    if group.blind:
                        group.blind = False
                        group.seen = last
                        reset = GroupMessage.in_group(Message.reset(format_key(last), "unknown-id"), group_number)
                        self.hub.reset_topics(self._wanted(group_number), reset)
                else:
                    await self._fill_gap(group_number, group)
                break
            except (redis.RedisError, OSError) as exc:
                logger.warning(
                    "events hub: cannot read the history of group %d (%s)", group_number, describe_error(exc)
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
        if group.epoch != epoch:
            return
        buffered, group.buffer = group.buffer or [], None
        group.establishing = None
        for message in buffered:
            self.deliver(message)

    async def _fill_gap(self, group_number: int, group: _Group) -> None:
        assert group.covered is not None
        topics = self._wanted(group_number)
        replay = await read_group(group_number, group.covered, topics)
        if replay.reset_reason is not None:
            logger.warning(
                "events hub: events of group %d may be lost (%s); its clients get a reset",
                group_number,
                replay.reset_reason,
            )
            reset = GroupMessage.in_group(Message.reset(format_key(replay.last_key), replay.reset_reason), group_number)
            group.seen = group.covered = replay.last_key
            self.hub.reset_topics(topics, reset)
            return
        group.covered = max(group.covered, replay.last_key)
        assert group.buffer is not None
        live, group.buffer = group.buffer, None
        for message in replay.events:
            self.deliver(message)
        group.buffer = live
        if replay.events:
            logger.info(
                "events hub: delivered %d events of group %d missed meanwhile", len(replay.events), group_number
            )

    def group_lost(self, group_number: int, why: str) -> None:
        group = self._groups.get(group_number)
        if group is None or group.reader is None:
            return
        was_live = group.buffer is None
        reader, group.reader = group.reader, None
        group.epoch += 1
        if group.establishing is not None:
            group.establishing.cancel()
            group.establishing = None
        group.buffer = None
        if group.seen is not None and (group.covered is None or group.seen > group.covered):
            group.covered = group.seen
        group.blind = group.covered is None
        topics = [
            topic for topic, owner in self._assigned.items() if owner is reader and group_of(topic) == group_number
        ]
        for topic in topics:
            del self._assigned[topic]
        # No SUNSUBSCRIBE: a node that loses a slot drops its shard channels
        # itself (and tells us so); a dead node has nothing to unsubscribe.
        reader.forget(topics)
        metrics.TOPICS_SUBSCRIBED.set(len(self._assigned))
        if was_live:
            logger.info("events hub: group %d lost (%s); re-subscribing %d topics", group_number, why, len(topics))
        self._wake.set()

    def reader_lost(self, reader: NodeReader) -> None:
        if self._closing:
            return
        for group_number, group in list(self._groups.items()):
            if group.reader is reader:
                self.group_lost(group_number, "its node failed")
        if self._readers.get(reader.address) is reader:
            del self._readers[reader.address]
        self._failures += 1
        if self.hub.wanted_topics():
            metrics.REDIS_RECONNECTS.inc()
        self._wake.set()

    def _wanted(self, group_number: int) -> list[str]:
        return [topic for topic in self.hub.wanted_topics() if group_of(topic) == group_number]

    # Messages ---------------------------------------------------------

    def deliver(self, message: GroupMessage) -> None:
        group = self._groups.get(message.group)
        if group is None:
            return
        if group.buffer is not None:
            if len(group.buffer) >= FILL_BUFFER:
                group.buffer = []
                reset = GroupMessage.in_group(Message.reset(message.id, "overflow"), message.group)
                self.hub.reset_topics(self._wanted(message.group), reset)
            group.buffer.append(message)
            return
        if group.seen is not None and message.key <= group.seen and not message.is_reset:
            return
        group.seen = message.key
        if group.covered is None or message.key > group.covered:
            group.covered = message.key
        self.hub.fan_out(message)

    async def read_watermark(self, reader: NodeReader) -> dict[int, tuple[int, EventKey]]:
        """The newest ids of the groups live on ``reader`` (with their epochs), read before a PING."""
        live = [n for n, g in self._groups.items() if g.reader is reader and g.buffer is None]
        if not live:
            return {}
        positions = await current_positions(live)
        return {n: (self._groups[n].epoch, key) for n, key in positions.items()}

    def advance(self, watermark: dict[int, tuple[int, EventKey]]) -> None:
        for group_number, (epoch, key) in watermark.items():
            group = self._groups.get(group_number)
            if group is not None and group.epoch == epoch and (group.covered is None or key > group.covered):
                group.covered = key

    async def _flush_unsubscribes(self) -> None:
        while self._to_unsubscribe:
            wanted = self.hub.wanted_topics()
            topics = [t for t in self._to_unsubscribe if t not in wanted and t in self._assigned]
            self._to_unsubscribe.clear()
            by_reader: dict[NodeReader, list[str]] = {}
            for topic in topics:
                by_reader.setdefault(self._assigned.pop(topic), []).append(topic)
            for group_number in {group_of(topic) for topic in topics}:
                if not any(group_of(topic) == group_number for topic in self._assigned):
                    group = self._groups.pop(group_number, None)
                    if group is not None and group.establishing is not None:
                        group.establishing.cancel()
            metrics.TOPICS_SUBSCRIBED.set(len(self._assigned))
            for reader, released in by_reader.items():
                await reader.unsubscribe(released)


def _by_slot(topics: list[str]) -> list[list[str]]:
    """Shard channel names of ``topics``, one list per group: one SSUBSCRIBE may name one slot only."""
    groups: dict[int, list[str]] = {}
    for topic in topics:
        groups.setdefault(group_of(topic), []).append(channel_name(topic))
    return list(groups.values())


async def _ssubscribe(pubsub: PubSub, topics: list[str]) -> None:
    for channels in _by_slot(topics):
        await pubsub.ssubscribe(*channels)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
