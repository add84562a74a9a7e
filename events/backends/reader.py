"""The hub's Redis side: one pub/sub connection, its subscriptions, reconnects and gap filling.

Both backends run this reader: the single node one per worker, a Redis
Cluster one per primary (``cluster/pubsub.py`` adds the slot bookkeeping
around it). What differs between them, how channels are named and
(un)subscribed, and where the history of a topic is, is a :class:`Dialect`.
Every guarantee is written here, once:

- Subscriptions follow what the clients want: ``subscribe()`` sends
  SUBSCRIBE for topics not yet subscribed and returns futures that Redis's
  confirmations resolve, in order; ``release()`` unsubscribes, in the
  background, from topics nobody wants any more. One lock keeps SUBSCRIBE,
  UNSUBSCRIBE and reconnects in order, and an UNSUBSCRIBE confirmation is
  matched to the UNSUBSCRIBE that asked for it, so a topic released and
  taken again within one round trip is not mistaken for one the server
  dropped (a Redis Cluster node drops the shard channels of a slot it gave
  away).
- Nothing is lost across a lost connection. Each *stream* (the history a
  topic's ids come from: the one stream of a single node, a slot group's on
  a cluster) has a :class:`~events.backends.watermark.Watermark`. On
  (re)connecting: subscribe to every wanted topic and read the newest ids;
  read the handshake up to the PONG; read the history after the newest id
  handed over, in bounded batches until caught up, and hand the missed
  events over; then the live messages that arrived meanwhile (the overlap is
  dropped by id); then live messages. A stream that joins a live connection
  (a cluster group moved here) is caught up the same way, in the reader's
  task, before any later message is read. While idle, a PING every few
  seconds checks the connection and lets the watermark advance to an id read
  just before the PING.
- Messages with ids Redis did not make (someone with PUBLISH rights sent
  them) are skipped: see ``watermark.py``.
- A topic nobody wants is unsubscribed :data:`UNSUBSCRIBE_DELAY` seconds
  later, if still unwanted: a long-poll answered is re-armed at once, and
  would otherwise wait for a SUBSCRIBE round trip (with every other poll of
  the topic) each time.
- What a resuming client can be spared (:meth:`Reader.has_all_after`): from
  a topic's SUBSCRIBE confirmation on, until it is unsubscribed or the
  connection is lost, every event of the topic reaches the hub through this
  connection. A client that has seen the newest event handed over since
  then has missed nothing that is not on its way: its history read is
  skipped (most long-polls re-armed after an answer, most reconnecting
  streams of a busy topic).
- Any failure, foreseen or not, is logged and followed by a reconnect with
  exponential backoff and jitter; ``connected`` says whether the reader is
  live (health and metrics report it).

The reader talks to the hub only through :class:`HubSide`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter, deque
from collections.abc import AsyncGenerator, Collection, Hashable
from contextlib import aclosing
from enum import Enum
from typing import Any, Protocol

import redis.asyncio
from redis.asyncio.client import PubSub

from .. import metrics
from ..core.ids import EventKey, format_key, parse_id
from ..core.messages import Message, skip_malformed
from ..core.tasks import cancel_and_wait, wait_set
from ..exceptions import HubUnavailable
from . import redis_url
from .confirmations import Confirmations
from .connection import describe_error
from .errors import REDIS_ERRORS
from .history import Batch
from .watermark import Watermark

logger = logging.getLogger("events.hub")

# Seconds without any message after which the reader PINGs (and, without an
# answer for as long again, declares the connection dead).
IDLE_PING = 5.0
# Reconnect backoff: doubles from MIN to MAX seconds, with jitter (up to
# +50%). MAX bounds what an outage or a failover costs on top of Redis's own
# time: at most 1.5 s after Redis (or the new primary) is back, the hub is on
# it. A reconnect attempt is one connection: cheap enough once a second.
BACKOFF_MIN = 0.1
BACKOFF_MAX = 1.0
# Seconds between two "cannot connect" warnings while Redis stays away.
WARN_EVERY = 30.0
# Seconds a topic stays subscribed once nobody wants it (see the module doc).
UNSUBSCRIBE_DELAY = 1.0

# Where a topic's ids come from: None for the one history of a single node
# (never dropped), a slot group's number on a cluster.
StreamKey = Hashable


class HubSide(Protocol):
    """What the Redis side may ask of the hub (the hub implements it)."""

    def wanted_topics(self) -> Collection[str]:
        """The topics at least one local client wants, as a live view."""
        ...

    def fan_out(self, message: Message) -> None:
        """Hand a new message to every local client of its topic."""
        ...

    def reset_topics(self, topics: list[str], message: Message) -> None:
        """Hand ``message`` (a reset) once to every local client of any of ``topics``."""
        ...


class HubConnection(Protocol):
    """The hub's Redis side, as the hub uses it (a :class:`Reader`, or the cluster's set of them)."""

    @property
    def connected(self) -> bool: ...

    async def wait_connected(self, timeout: float) -> None: ...

    async def subscribe(self, topics: frozenset[str]) -> list[asyncio.Future[None]]: ...

    def release(self, topics: list[str]) -> None: ...

    async def read_forever(self) -> None: ...

    async def aclose(self) -> None: ...


class Dialect(Protocol):
    """How one kind of Redis names, subscribes and keeps history: what the reader leaves to each backend."""

    # The pub/sub message types: a message, a subscribe and an unsubscribe confirmation.
    MESSAGE: str
    SUBSCRIBED: str
    UNSUBSCRIBED: str

    def topic_of(self, channel: bytes) -> str: ...

    def stream_of(self, topic: str) -> StreamKey: ...

    def message(self, topic: str, data: bytes) -> Message:
        """The message of a pub/sub body (ValueError, TypeError or AttributeError for foreign data)."""
        ...

    async def subscribe(self, pubsub: PubSub, topics: list[str]) -> None: ...

    async def unsubscribe(self, pubsub: PubSub, topics: list[str]) -> None: ...

    async def measure(
        self, client: redis.asyncio.Redis, streams: Collection[StreamKey]
    ) -> tuple[int, dict[StreamKey, EventKey]]:
        """Redis's clock (ms) and the newest id of each of ``streams``."""
        ...

    def read_after(
        self, client: redis.asyncio.Redis, stream: StreamKey, since: EventKey, topics: list[str]
    ) -> AsyncGenerator[Batch, None]:
        """The history of ``stream`` after ``since`` on ``topics``, in bounded batches to its end (see history.py)."""
        ...

    def reset(self, stream: StreamKey, key: EventKey, reason: str) -> Message:
        """A reset of ``stream``'s clients, resuming from ``key``."""
        ...


class _Signal(Enum):
    PONG = "pong"
    IDLE = "idle"


class Reader:
    """One pub/sub connection and everything that keeps it exact (the module doc)."""

    def __init__(
        self,
        hub: HubSide,
        dialect: Dialect,
        client: redis.asyncio.Redis,
        commands: redis.asyncio.Redis,
        watermarks: dict[StreamKey, Watermark] | None = None,
        name: str = "Redis",
    ) -> None:
        self.hub = hub
        self.dialect = dialect
        self.name = name
        # Per stream; shared with the other readers of a cluster (a group moves between them).
        self.watermarks: dict[StreamKey, Watermark] = {} if watermarks is None else watermarks
        # Topics with a SUBSCRIBE (and no UNSUBSCRIBE since) on this connection.
        self._subscribed: set[str] = set()
        # How many of them each stream has (a stream with none is forgotten).
        self._per_stream: Counter[StreamKey] = Counter()
        # UNSUBSCRIBEs sent per topic whose confirmation has not arrived yet.
        self._unsubscribing: Counter[str] = Counter()
        # Streams caught up on this connection (their live messages are exact).
        self._live: set[StreamKey] = set()
        # Topics whose every event since their SUBSCRIBE confirmation reaches
        # the hub here: the newest one's id handed over (None: none yet).
        self._newest_live: dict[str, EventKey | None] = {}
        # Newest ids read before each PING in flight, oldest first: a PONG covers them.
        self._pings: deque[dict[StreamKey, EventKey]] = deque()
        self._confirmations = Confirmations()
        self._connected = asyncio.Event()
        self._lock = asyncio.Lock()
        self._pubsub: PubSub | None = None
        self._redis = client
        self._commands = commands
        self._to_unsubscribe: set[str] = set()
        self._unsubscribe_task: asyncio.Task[None] | None = None
        self._ever_connected = False

    # The hub's interface ------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> None:
        """Return once connected; TimeoutError after ``timeout`` seconds."""
        if not await wait_set(self._connected, timeout):
            raise TimeoutError

    def wanted_topics(self) -> Collection[str]:
        """The topics this connection should carry (a live view)."""
        return self.hub.wanted_topics()

    def release(self, topics: list[str]) -> None:
        """Unsubscribe soon (in the background) from ``topics``, unless wanted again by then."""
        self._to_unsubscribe.update(topics)
        if self._to_unsubscribe and (self._unsubscribe_task is None or self._unsubscribe_task.done()):
            self._unsubscribe_task = asyncio.get_running_loop().create_task(self._flush_unsubscribes())

    async def aclose(self) -> None:
        """Stop unsubscribing and close the connection (the reader task is its owner's to cancel)."""
        await cancel_and_wait(self._unsubscribe_task)
        await redis_url.aclose_client(self._redis)
        await redis_url.aclose_client(self._commands)

    async def subscribe(self, topics: frozenset[str]) -> list[asyncio.Future[None]]:
        """Send SUBSCRIBE for topics not yet subscribed; return the confirmations to wait for."""
        if self._connected.is_set() and self._subscribed.issuperset(topics):
            # The common case (a topic other clients already want): no lock, no Redis.
            return self._pending_confirmations(topics)
        async with self._lock:
            pubsub = self._pubsub
            if pubsub is None or not self._connected.is_set():
                raise HubUnavailable(f"{self.name} is unreachable")
            missing = [topic for topic in topics if topic not in self._subscribed]
            if missing:
                self._expect_confirmations(missing)
                await self.dialect.subscribe(pubsub, missing)
            return self._pending_confirmations(topics)

    def has_all_after(self, topics: Collection[str], key: EventKey) -> bool:
        """Whether a client attached now that has seen ``key`` will get every later event of ``topics`` live.

        True when each topic's newest event since its SUBSCRIBE confirmation
        is known and not after ``key``, and ``key`` is one of them (an id
        Redis made: any other, unknown or ahead of Redis, is for the history
        to judge, with a reset). The events after it are on their way on
        this connection, in order. Otherwise (no event seen since the
        confirmation, unsubscribed, connection lost) only the history can tell.
        """
        if not self._connected.is_set():
            return False
        newest_live = self._newest_live
        seen = False
        for topic in topics:
            newest = newest_live.get(topic)
            if newest is None or newest > key:
                return False
            seen = seen or newest == key
        return seen

    async def subscribe_wanted(self) -> bool:
        """Subscribe every wanted topic not subscribed yet; False when not connected (connecting does it)."""
        if not self._connected.is_set():
            return False
        missing = frozenset(self.wanted_topics()).difference(self._subscribed)
        if missing:
            await self.subscribe(missing)
        return True

    def forget(self, topics: list[str], reason: str) -> None:
        """Stop carrying ``topics`` (their slot moved to another reader); their waiters fail."""
        self._remove_subscribed(topics)
        self._confirmations.fail(reason, topics)
        self._lose_live({self.dialect.stream_of(topic) for topic in topics})
        self._state_changed()

    # Hooks (the cluster's per-node reader overrides them) ---------------

    def _dropped(self, topic: str) -> None:
        """The server unsubscribed us from ``topic`` by itself (a cluster node gave its slot away)."""
        logger.warning("events hub: %s unsubscribed topic %r by itself; reconnecting", self.name, topic)
        raise ConnectionError(f"{self.name} dropped a subscription")

    def _state_changed(self) -> None:
        """Connected or not, or the number of topics changed: update the metrics."""
        metrics.HUB_CONNECTED.set(1 if self.connected else 0)
        metrics.TOPICS_SUBSCRIBED.set(len(self._subscribed))

    def _log_level(self, lost: bool) -> int:
        return logging.WARNING

    # Subscriptions ------------------------------------------------------

    def _pending_confirmations(self, topics: frozenset[str]) -> list[asyncio.Future[None]]:
        futures = map(self._confirmations.latest, topics)
        return [future for future in futures if future is not None]

    def _expect_confirmations(self, topics: list[str]) -> None:
        for topic in topics:
            if topic not in self._subscribed:
                self._subscribed.add(topic)
                self._per_stream[self.dialect.stream_of(topic)] += 1
            self._confirmations.expect(topic)
        self._state_changed()

    def _remove_subscribed(self, topics: Collection[str]) -> set[StreamKey]:
        """Forget ``topics`` as subscribed; return the streams left without any."""
        emptied: set[StreamKey] = set()
        for topic in topics:
            self._newest_live.pop(topic, None)
            if topic in self._subscribed:
                self._subscribed.discard(topic)
                stream = self.dialect.stream_of(topic)
                self._per_stream[stream] -= 1
                if self._per_stream[stream] <= 0:
                    del self._per_stream[stream]
                    emptied.add(stream)
        return emptied

    async def _flush_unsubscribes(self) -> None:
        while self._to_unsubscribe:
            # Wanted again meanwhile (a long-poll re-armed), a topic stays.
            await asyncio.sleep(UNSUBSCRIBE_DELAY)
            async with self._lock:
                wanted = self.wanted_topics()
                topics = [topic for topic in self._to_unsubscribe if topic not in wanted and topic in self._subscribed]
                self._to_unsubscribe.clear()
                # A group nobody wants any more is forgotten: if wanted again,
                # it starts from its newest id then (its clients replay by
                # themselves). The single node's one stream (None) stays.
                for stream in self._remove_subscribed(topics):
                    if stream is not None:
                        self._live.discard(stream)
                        self.watermarks.pop(stream, None)
                self._state_changed()
                if topics and self._pubsub is not None and self._connected.is_set():
                    self._unsubscribing.update(topics)
                    try:
                        await self.dialect.unsubscribe(self._pubsub, topics)
                    except REDIS_ERRORS:
                        # The connection is going; the reconnect will not
                        # re-subscribe these topics since nobody wants them.
                        pass

    # The reader task ----------------------------------------------------

    async def read_forever(self) -> None:
        """Connect, read, and reconnect after any failure, until cancelled (the owner's stop)."""
        delay = BACKOFF_MIN
        loop = asyncio.get_running_loop()
        warned_at: float | None = None
        while True:
            try:
                await self._connect_and_read()
            except REDIS_ERRORS as exc:
                lost = self._connected.is_set()
                # A lost connection is always logged; failed attempts to get
                # it back (one a second) at most every WARN_EVERY seconds.
                if lost or warned_at is None or loop.time() - warned_at >= WARN_EVERY:
                    warned_at = loop.time()
                    state = "connection lost" if lost else "cannot connect"
                    logger.log(
                        self._log_level(lost), "events hub: %s pub/sub %s (%s)", self.name, state, describe_error(exc)
                    )
            except Exception:
                # A bug or data we did not foresee must not end the reader
                # for good (the hub would refuse every client from then on).
                logger.exception("events hub: unexpected error in the %s reader; reconnecting", self.name)
            finally:
                # Also when cancelled (the owner stops): then nothing below runs.
                was_connected = self._connected.is_set()
                await self._disconnected()
            if was_connected:
                logger.warning(
                    "events hub: disconnected from %s; open streams stay open and keep their heartbeats", self.name
                )
                delay = BACKOFF_MIN
            await asyncio.sleep(delay * (1 + random.random() / 2))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _connect_and_read(self) -> None:
        """One connection's life: subscribe, handshake, catch up, then read until it fails."""
        pubsub = self._redis.pubsub()
        topics, newest = await self._subscribe_all(pubsub)
        early = await self._read_handshake(pubsub)
        fresh = [stream for stream in newest if self._watermark(stream).newest is None]
        # First what was published while we were away, then what arrived
        # during the handshake (the overlap is dropped by id).
        for stream in newest:
            if stream not in fresh:
                await self._catch_up(stream)
        for message in early:
            await self._receive(message)
        for stream in fresh:
            # Everything up to the id read before the PING has been read.
            self._watermark(stream).cover(newest[stream])
            self._reset_if_blind(stream, newest[stream])
        self._live.update(newest)
        reconnected = self._ever_connected
        self._ever_connected = True
        self._connected.set()
        self._state_changed()
        if reconnected:
            metrics.REDIS_RECONNECTS.inc()
            logger.info("events hub: reconnected to %s, %d topics", self.name, len(topics))
        await self._read_loop(pubsub)

    async def _subscribe_all(self, pubsub: PubSub) -> tuple[list[str], dict[StreamKey, EventKey]]:
        """Connect, SUBSCRIBE to every wanted topic, read the newest ids, send a PING.

        Returns the topics and the newest id of each of their streams. Redis
        answers in order: when the PONG arrives, every SUBSCRIBE is in force
        and every message published before the ids were read has arrived.
        """
        async with self._lock:
            self._pubsub = pubsub
            topics = list(self.wanted_topics())
            self._expect_confirmations(topics)
            await pubsub.connect()  # type: ignore[no-untyped-call]
            if topics:
                await self.dialect.subscribe(pubsub, topics)
            newest = await self._measure({self.dialect.stream_of(topic) for topic in topics} | self._always())
            await pubsub.ping()
        return topics, newest

    def _always(self) -> set[StreamKey]:
        # The single node's one stream is measured even without topics.
        return {None} if self.dialect.stream_of("") is None else set()

    async def _read_handshake(self, pubsub: PubSub) -> list[Message]:
        """Read up to the PONG: the confirmations, and the messages that came first (returned)."""
        early: list[Message] = []
        while True:
            item = await self._next(pubsub, handshake=True)
            if item is _Signal.PONG:
                return early
            if item is _Signal.IDLE:
                raise TimeoutError("no answer to PING")
            early.append(item)

    async def _read_loop(self, pubsub: PubSub) -> None:
        """Hand live messages to the hub; while idle, check the connection and advance the watermarks."""
        self._pings.clear()
        while True:
            item = await self._next(pubsub)
            if item is _Signal.IDLE:
                if self._pings:
                    raise TimeoutError("no answer to PING")
                await self._ping(pubsub, self._live)
            elif item is _Signal.PONG:
                # The PONG proves we have read every message up to the ids read before its PING.
                if self._pings:
                    for stream, key in self._pings.popleft().items():
                        if stream in self._live:
                            self._watermark(stream).cover(key)
            else:
                await self._receive(item)

    async def _ping(self, pubsub: PubSub, streams: Collection[StreamKey]) -> None:
        self._pings.append(await self._measure(streams))
        await pubsub.ping()

    async def _next(self, pubsub: PubSub, handshake: bool = False) -> Message | _Signal:
        """The next message on our channels, or a PONG, or IDLE after IDLE_PING quiet seconds.

        Confirmations are handled here (a stream joining a live connection is
        caught up at its first one); foreign data is skipped.
        """
        dialect = self.dialect
        while True:
            raw = await pubsub.get_message(timeout=IDLE_PING)
            if raw is None:
                return _Signal.IDLE
            kind = raw["type"]
            if kind == dialect.MESSAGE:
                message = self._parse(raw)
                if message is not None:
                    return message
            elif kind == dialect.SUBSCRIBED:
                topic = dialect.topic_of(raw["channel"])
                self._confirmations.confirm(topic)
                if topic in self._subscribed and not self._unsubscribing[topic] and topic not in self._newest_live:
                    # Every event of the topic from here on comes through this connection.
                    self._newest_live[topic] = None
                stream = dialect.stream_of(topic)
                if not handshake and stream not in self._live and topic in self._subscribed:
                    await self._join(pubsub, stream)
            elif kind == dialect.UNSUBSCRIBED:
                topic = dialect.topic_of(raw["channel"])
                if self._unsubscribing[topic] > 0:
                    self._unsubscribing[topic] -= 1
                    if not self._unsubscribing[topic]:
                        del self._unsubscribing[topic]
                elif topic in self._subscribed:
                    self._dropped(topic)
            elif kind == "pong":
                return _Signal.PONG

    async def _join(self, pubsub: PubSub, stream: StreamKey) -> None:
        """A stream's first topic is subscribed on this live connection: catch it up, or start covering it."""
        self._live.add(stream)
        watermark = self._watermark(stream)
        if watermark.newest is not None:
            await self._catch_up(stream)
        elif watermark.blind:
            newest = (await self._measure([stream]))[stream]
            watermark.restart(newest)
            self._reset_if_blind(stream, newest)
        else:
            await self._ping(pubsub, [stream])

    def _reset_if_blind(self, stream: StreamKey, newest: EventKey) -> None:
        watermark = self._watermark(stream)
        if watermark.blind:
            watermark.blind = False
            logger.warning("events hub: events may have been lost (%s); clients get a reset", self.name)
            self.hub.reset_topics(self._topics_of(stream), self.dialect.reset(stream, newest, "unknown-id"))

    def _topics_of(self, stream: StreamKey) -> list[str]:
        return [topic for topic in self._subscribed if self.dialect.stream_of(topic) == stream]

    def _parse(self, raw: dict[str, Any]) -> Message | None:
        """The message, or None (logged, rate-limited) for foreign data on our channel."""
        try:
            return self.dialect.message(self.dialect.topic_of(raw["channel"]), raw["data"])
        except (ValueError, TypeError, AttributeError) as exc:
            skip_malformed(f"channel {raw['channel']!r}", exc)
            return None

    def _watermark(self, stream: StreamKey) -> Watermark:
        watermark = self.watermarks.get(stream)
        if watermark is None:
            watermark = self.watermarks[stream] = Watermark()
        return watermark

    async def _receive(self, message: Message) -> None:
        """Hand a live message to the hub, unless it is a duplicate or Redis did not make it."""
        stream = self.dialect.stream_of(message.topic or "")
        watermark = self._watermark(stream)
        now = asyncio.get_running_loop().time()
        if watermark.plausible(message.key, now) or await self._made_by_redis(stream, message):
            self._hand_over(watermark, message)

    def _hand_over(self, watermark: Watermark, message: Message) -> None:
        if watermark.is_duplicate(message.key):
            return
        watermark.handed(message.key)
        topic = message.topic
        if topic in self._newest_live:
            newest = self._newest_live[topic]
            if newest is None or message.key > newest:
                self._newest_live[topic] = message.key
        self.hub.fan_out(message)

    async def _measure(self, streams: Collection[StreamKey]) -> dict[StreamKey, EventKey]:
        """Read Redis's clock and the newest ids of ``streams`` (the watermarks' horizon); return the ids."""
        sent_at = asyncio.get_running_loop().time()
        redis_ms, newest = await self.dialect.measure(self._commands, list(streams))
        for stream, key in newest.items():
            self._watermark(stream).measure(redis_ms, key, sent_at)
        return newest

    async def _made_by_redis(self, stream: StreamKey, message: Message) -> bool:
        """Whether ``message``'s id (beyond the horizon) is one Redis made; if not, skip it as foreign."""
        newest = (await self._measure([stream]))[stream]
        if message.key <= newest:
            return True  # Redis's clock jumped ahead: the measure above caught up with it
        skip_malformed(
            f"channel of topic {message.topic!r}",
            ValueError(f"id {message.id} is ahead of the newest id Redis has made ({format_key(newest)})"),
        )
        return False

    async def _catch_up(self, stream: StreamKey) -> None:
        """Hand over what ``stream``'s topics missed after the newest id handed, batch after batch, to the end."""
        watermark = self._watermark(stream)
        start = watermark.newest
        assert start is not None
        topics = self._topics_of(stream)
        delivered = 0
        async with aclosing(self.dialect.read_after(self._commands, stream, start, topics)) as batches:
            async for batch in batches:
                if batch.reset is not None:
                    logger.warning("events hub: events may have been lost (%s); clients get a reset", self.name)
                    watermark.restart(batch.reset.key)
                    self.hub.reset_topics(topics, batch.reset)
                    return
                for message in batch.events:
                    self._hand_over(watermark, message)
                delivered += len(batch.events)
                watermark.cover(parse_id(batch.position))
        if delivered:
            logger.info("events hub: delivered %d events missed meanwhile (%s)", delivered, self.name)

    def _lose_live(self, streams: Collection[StreamKey]) -> None:
        for stream in streams:
            watermark = self.watermarks.get(stream)
            if watermark is not None and watermark.newest is None:
                watermark.blind = True
        self._live.difference_update(streams)

    async def _disconnected(self) -> None:
        self._connected.clear()
        async with self._lock:
            self._lose_live(list(self._live))
            self._confirmations.fail(f"{self.name} connection lost")
            self._subscribed.clear()
            self._newest_live.clear()
            self._per_stream.clear()
            self._unsubscribing.clear()
            self._pings.clear()
            pubsub, self._pubsub = self._pubsub, None
        self._state_changed()
        if pubsub is not None:
            try:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            except REDIS_ERRORS:
                pass
