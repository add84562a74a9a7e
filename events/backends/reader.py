"""The hub's Redis side: one pub/sub connection, its subscriptions, reconnects and gap filling.

Subscriptions follow what the hub's clients want: ``subscribe()`` sends
SUBSCRIBE for topics not yet subscribed and returns futures that Redis's
confirmations resolve, in order; ``release()`` unsubscribes, in the
background, from topics nobody wants any more (a lock keeps SUBSCRIBE and
UNSUBSCRIBE in order with reconnects).

The reader talks to the hub only through :class:`HubSide` (which topics are
wanted; hand a message to their clients; reset everyone). It owns the
de-duplication watermark (``watermark.py``), which also tells messages
Redis made from foreign ones with made-up ids.

Nothing is lost across a lost connection. One connection's life, in
``_connect_and_read``: subscribe to every wanted topic and read the newest
id; read the handshake up to the PONG; after a reconnect, read the history
after the newest id handed over and hand the missed events over, then the
live messages that arrived meanwhile (the overlap is dropped by id); then
read live messages. While idle, a PING every few seconds checks the
connection and, because Redis answers in order, lets the watermark advance
safely to an id read just before the PING. Reconnects back off
exponentially, with jitter.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Collection
from contextlib import aclosing
from enum import Enum
from typing import Any, Protocol

import redis
import redis.asyncio
from redis.asyncio.client import PubSub

from .. import metrics
from ..core.ids import EventKey, format_key, parse_id
from ..core.messages import Message, skip_malformed
from ..core.tasks import cancel_and_wait, wait_set
from ..exceptions import HubUnavailable
from . import history, redis_url
from .confirmations import Confirmations
from .connection import channel_prefix, describe_error, new_hub_command_client, new_pubsub_client
from .watermark import Watermark

logger = logging.getLogger("events.hub")

# Seconds without any message after which the reader PINGs (and, without an
# answer for as long again, declares the connection dead).
IDLE_PING = 5.0
# Reconnect backoff: doubles from MIN to MAX seconds, with jitter (up to
# +50%). MAX bounds what an outage or a Sentinel failover costs on top of
# Redis's own time: at most 1.5 s after Redis (or the new primary) is back,
# the hub is on it. A reconnect attempt is one connection (and, with
# Sentinel, one question to a sentinel): cheap enough once a second.
BACKOFF_MIN = 0.1
BACKOFF_MAX = 1.0
# Seconds between two "cannot connect" warnings while Redis stays away.
WARN_EVERY = 30.0


class HubSide(Protocol):
    """What the Redis side may ask of the hub (the hub implements it)."""

    def wanted_topics(self) -> Collection[str]:
        """The topics at least one local client wants, as a live view."""
        ...

    def fan_out(self, message: Message) -> None:
        """Hand a new message to every local client of its topic."""
        ...

    def reset_all(self, message: Message) -> None:
        """Hand ``message`` (a reset) to every local client: events may have been lost."""
        ...

    def reset_topics(self, topics: list[str], message: Message) -> None:
        """Hand ``message`` (a reset) once to every local client of any of ``topics``."""
        ...


class HubConnection(Protocol):
    """The hub's Redis side, as the hub uses it (this module's, or the cluster's)."""

    @property
    def connected(self) -> bool: ...

    async def wait_connected(self, timeout: float) -> None: ...

    async def subscribe(self, topics: frozenset[str]) -> list[asyncio.Future[None]]: ...

    def release(self, topics: list[str]) -> None: ...

    async def read_forever(self) -> None: ...

    async def aclose(self) -> None: ...


class _Signal(Enum):
    PONG = "pong"
    IDLE = "idle"


class PubSubConnection:
    def __init__(self, hub: HubSide) -> None:
        self.hub = hub
        self._watermark = Watermark()
        self._prefix = channel_prefix()
        self._prefix_bytes = self._prefix.encode()
        # Topics with a SUBSCRIBE (and no UNSUBSCRIBE since) on this connection.
        self._subscribed: set[str] = set()
        self._confirmations = Confirmations()
        self._connected = asyncio.Event()
        self._lock = asyncio.Lock()
        self._pubsub: PubSub | None = None
        self._redis: redis.asyncio.Redis = new_pubsub_client()
        self._commands: redis.asyncio.Redis = new_hub_command_client()
        self._to_unsubscribe: set[str] = set()
        self._unsubscribe_task: asyncio.Task[None] | None = None
        self._ever_connected = False

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> None:
        """Return once connected; TimeoutError after ``timeout`` seconds."""
        if not await wait_set(self._connected, timeout):
            raise TimeoutError

    def release(self, topics: list[str]) -> None:
        """Unsubscribe soon (in the background) from ``topics``, unless wanted again by then."""
        self._to_unsubscribe.update(topics)
        if self._to_unsubscribe and (self._unsubscribe_task is None or self._unsubscribe_task.done()):
            self._unsubscribe_task = asyncio.get_running_loop().create_task(self._flush_unsubscribes())

    async def aclose(self) -> None:
        """Stop unsubscribing and close the connection (the reader task is the hub's to cancel)."""
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
                raise HubUnavailable("Redis is unreachable")
            missing = [topic for topic in topics if topic not in self._subscribed]
            if missing:
                self._expect_confirmations(missing)
                await pubsub.subscribe(*[self._prefix + topic for topic in missing])
            return self._pending_confirmations(topics)

    def _pending_confirmations(self, topics: frozenset[str]) -> list[asyncio.Future[None]]:
        futures = map(self._confirmations.latest, topics)
        return [future for future in futures if future is not None]

    def _expect_confirmations(self, topics: list[str]) -> None:
        for topic in topics:
            self._subscribed.add(topic)
            self._confirmations.expect(topic)
        metrics.TOPICS_SUBSCRIBED.set(len(self._subscribed))

    async def _flush_unsubscribes(self) -> None:
        while self._to_unsubscribe:
            async with self._lock:
                wanted = self.hub.wanted_topics()
                topics = [topic for topic in self._to_unsubscribe if topic not in wanted and topic in self._subscribed]
                self._to_unsubscribe.clear()
                self._subscribed.difference_update(topics)
                metrics.TOPICS_SUBSCRIBED.set(len(self._subscribed))
                if topics and self._pubsub is not None and self._connected.is_set():
                    try:
                        await self._pubsub.unsubscribe(*[self._prefix + topic for topic in topics])
                    except (redis.RedisError, OSError):
                        # The connection is going; the reconnect will not
                        # re-subscribe these topics since nobody wants them.
                        pass

    def _topic(self, channel: bytes) -> str:
        return channel[len(self._prefix_bytes) :].decode()

    def _parse(self, raw: dict[str, Any]) -> Message | None:
        """The message, or None (logged, rate-limited) for foreign data on our channel."""
        try:
            return Message.from_pubsub(self._topic(raw["channel"]), raw["data"])
        except (ValueError, TypeError, AttributeError) as exc:
            skip_malformed(f"channel {raw['channel']!r}", exc)
            return None

    async def read_forever(self) -> None:
        """Connect, read, and reconnect after any failure, until cancelled (the hub's stop)."""
        delay = BACKOFF_MIN
        loop = asyncio.get_running_loop()
        warned_at: float | None = None
        while True:
            try:
                await self._connect_and_read()
            except (redis.RedisError, OSError, TimeoutError) as exc:
                lost = self._connected.is_set()
                # A lost connection is always logged; failed attempts to get
                # it back (one a second) at most every WARN_EVERY seconds.
                if lost or warned_at is None or loop.time() - warned_at >= WARN_EVERY:
                    warned_at = loop.time()
                    state = "connection lost" if lost else "cannot connect"
                    logger.warning("events hub: Redis pub/sub %s (%s)", state, describe_error(exc))
            except Exception:
                # A bug or data we did not foresee must not end the reader
                # for good (the hub would refuse every client from then on).
                logger.exception("events hub: unexpected error in the Redis reader; reconnecting")
            finally:
                # Also when cancelled (the hub stops): then nothing below runs.
                was_connected = self._connected.is_set()
                await self._disconnected()
            if was_connected:
                logger.warning("events hub: disconnected from Redis; open streams stay open and keep their heartbeats")
                delay = BACKOFF_MIN
            await asyncio.sleep(delay * (1 + random.random() / 2))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _connect_and_read(self) -> None:
        """One connection's life: subscribe, handshake, catch up, then read until it fails."""
        pubsub = self._redis.pubsub()
        topics, newest_id = await self._subscribe_all(pubsub)
        early = await self._read_handshake(pubsub)
        reconnected = self._ever_connected
        if reconnected:
            # First what was published while we were away, then what
            # arrived during the handshake (the overlap is dropped by id).
            await self._fill_gap(topics)
        for message in early:
            await self._receive(message)
        if not reconnected:
            # Everything up to the id read before the PING has been read.
            self._watermark.cover(newest_id)
        self._ever_connected = True
        self._connected.set()
        metrics.HUB_CONNECTED.set(1)
        if reconnected:
            metrics.REDIS_RECONNECTS.inc()
            logger.info("events hub: reconnected to Redis, %d topics", len(topics))
        await self._read_loop(pubsub)

    async def _subscribe_all(self, pubsub: PubSub) -> tuple[list[str], EventKey]:
        """Connect, SUBSCRIBE to every wanted topic, read the newest id, send a PING.

        Returns the topics and the newest id. Redis answers in order: when
        the PONG arrives, every SUBSCRIBE is in force and every message
        published before the id was read has arrived.
        """
        async with self._lock:
            self._pubsub = pubsub
            topics = list(self.hub.wanted_topics())
            self._expect_confirmations(topics)
            await pubsub.connect()  # type: ignore[no-untyped-call]
            if topics:
                await pubsub.subscribe(*[self._prefix + topic for topic in topics])
            newest_id = await self._measure()
            await pubsub.ping()
        return topics, newest_id

    async def _read_handshake(self, pubsub: PubSub) -> list[Message]:
        """Read up to the PONG: the confirmations, and the messages that came first (returned)."""
        early: list[Message] = []
        while True:
            item = await self._next(pubsub)
            if item is _Signal.PONG:
                return early
            if item is _Signal.IDLE:
                raise TimeoutError("no answer to PING from Redis")
            early.append(item)

    async def _read_loop(self, pubsub: PubSub) -> None:
        """Hand live messages to the hub; while idle, check the connection and advance the watermark."""
        newest_id: EventKey | None = None  # read before the PING in flight
        while True:
            item = await self._next(pubsub)
            if item is _Signal.IDLE:
                if newest_id is not None:
                    raise TimeoutError("no answer to PING from Redis")
                newest_id = await self._measure()
                await pubsub.ping()
            elif item is _Signal.PONG:
                # The PONG proves we have read every message up to newest_id.
                if newest_id is not None:
                    self._watermark.cover(newest_id)
                    newest_id = None
            else:
                await self._receive(item)

    async def _next(self, pubsub: PubSub) -> Message | _Signal:
        """The next message on our channels, or a PONG, or IDLE after IDLE_PING quiet seconds.

        SUBSCRIBE confirmations are handled here; foreign data is skipped.
        """
        while True:
            raw = await pubsub.get_message(timeout=IDLE_PING)
            if raw is None:
                return _Signal.IDLE
            kind = raw["type"]
            if kind == "message":
                message = self._parse(raw)
                if message is not None:
                    return message
            elif kind == "subscribe":
                self._confirmations.confirm(self._topic(raw["channel"]))
            elif kind == "pong":
                return _Signal.PONG

    async def _receive(self, message: Message) -> None:
        """Hand a live message to the hub, unless it is a duplicate or Redis did not make it."""
        now = asyncio.get_running_loop().time()
        if self._watermark.plausible(message.key, now) or await self._made_by_redis(message):
            self._hand_over(message)

    def _hand_over(self, message: Message) -> None:
        if self._watermark.is_duplicate(message.key):
            return
        self._watermark.handed(message.key)
        self.hub.fan_out(message)

    async def _measure(self) -> EventKey:
        """Read Redis's newest id and clock (the watermark's horizon); return the newest id."""
        sent_at = asyncio.get_running_loop().time()
        newest_id = parse_id(await history.read_current_id(self._commands))
        seconds, microseconds = await self._commands.time()
        self._watermark.measure(seconds * 1000 + microseconds // 1000, newest_id, sent_at)
        return newest_id

    async def _made_by_redis(self, message: Message) -> bool:
        """Whether ``message``'s id (beyond the horizon) is one Redis made; if not, skip it as foreign."""
        newest_id = await self._measure()
        if message.key <= newest_id:
            return True  # Redis's clock jumped ahead: the measure above caught up with it
        skip_malformed(
            f"channel of topic {message.topic!r}",
            ValueError(f"id {message.id} is ahead of the newest id Redis has made ({format_key(newest_id)})"),
        )
        return False

    async def _fill_gap(self, topics: list[str]) -> None:
        """After a reconnect: hand over what was published while we were away (in bounded batches)."""
        start = self._watermark.newest
        if start is None:
            return
        delivered = 0
        async with aclosing(history.read_after(self._commands, format_key(start), topics)) as batches:
            async for batch in batches:
                if batch.reset is not None:
                    logger.warning("events hub: events were lost while disconnected; clients get a reset")
                    self._watermark.restart(batch.reset.key)
                    self.hub.reset_all(batch.reset)
                    return
                for message in batch.events:
                    self._hand_over(message)
                delivered += len(batch.events)
                self._watermark.cover(parse_id(batch.position))
        if delivered:
            logger.info("events hub: delivered %d events missed while disconnected", delivered)

    async def _disconnected(self) -> None:
        self._connected.clear()
        metrics.HUB_CONNECTED.set(0)
        async with self._lock:
            self._confirmations.fail("Redis connection lost")
            self._subscribed.clear()
            metrics.TOPICS_SUBSCRIBED.set(0)
            pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            except (redis.RedisError, OSError):
                pass
