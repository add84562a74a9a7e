"""The hub's Redis side: one pub/sub connection, its subscriptions, reconnects and gap filling.

Subscriptions follow what the hub's clients want: ``subscribe()`` sends
SUBSCRIBE for topics not yet subscribed and returns futures that Redis's
confirmations resolve, in order; ``release()`` unsubscribes, in the
background, from topics nobody wants any more (a lock keeps SUBSCRIBE and
UNSUBSCRIBE in order with reconnects).

Nothing is lost across a lost connection. The hub remembers the newest event
id it has seen (``hub.last_key``); after reconnecting and re-subscribing, the
reader reads the history after that id and hands the missed events to the
hub, then the live messages that arrived meanwhile (duplicates are dropped by
id). While idle, a PING every few seconds checks the connection and, because
Redis answers in order, lets it advance ``last_key`` safely to an id read just
before the PING. Reconnects back off exponentially, with jitter.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio
from redis.asyncio.client import PubSub

from . import history, metrics, redis_url
from .connection import channel_prefix, describe_error, new_hub_command_client, new_pubsub_client
from .exceptions import HubUnavailable
from .ids import format_key, parse_id
from .messages import Message, skip_malformed

if TYPE_CHECKING:
    from .hub import Hub

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


class PubSubConnection:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._prefix = channel_prefix()
        self._prefix_bytes = self._prefix.encode()
        # Topics with a SUBSCRIBE (and no UNSUBSCRIBE since) on this connection.
        self._subscribed: set[str] = set()
        # Per topic, one future per SUBSCRIBE not yet confirmed, resolved in
        # order as Redis's confirmations arrive.
        self._confirmations: dict[str, deque[asyncio.Future[None]]] = {}
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
        """Return once connected; TimeoutError after ``timeout`` seconds.

        Not ``asyncio.wait_for``: on Python <= 3.11 it can swallow the caller's
        cancellation (see ``hub.wait_shared``).
        """
        if self._connected.is_set():
            return
        waiter = asyncio.ensure_future(self._connected.wait())
        try:
            await asyncio.wait([waiter], timeout=timeout)
        finally:
            waiter.cancel()
        if not self._connected.is_set():
            raise TimeoutError

    def release(self, topics: list[str]) -> None:
        """Unsubscribe soon (in the background) from ``topics``, unless wanted again by then."""
        self._to_unsubscribe.update(topics)
        if self._to_unsubscribe and (self._unsubscribe_task is None or self._unsubscribe_task.done()):
            self._unsubscribe_task = asyncio.get_running_loop().create_task(self._flush_unsubscribes())

    async def aclose(self) -> None:
        """Stop unsubscribing and close the connection (the reader task is the hub's to cancel)."""
        if self._unsubscribe_task is not None:
            self._unsubscribe_task.cancel()
            try:
                await self._unsubscribe_task
            except asyncio.CancelledError:
                pass
        await redis_url.aclose_client(self._redis)
        await redis_url.aclose_client(self._commands)

    async def subscribe(self, topics: frozenset[str]) -> list[asyncio.Future[None]]:
        """Send SUBSCRIBE for topics not yet subscribed; return the confirmations to wait for."""
        if self._connected.is_set() and self._subscribed.issuperset(topics):
            # The common case (a topic other clients already want): no lock, no Redis.
            return [self._confirmations[topic][-1] for topic in topics if topic in self._confirmations]
        async with self._lock:
            pubsub = self._pubsub
            if pubsub is None or not self._connected.is_set():
                raise HubUnavailable("Redis is unreachable")
            missing = [topic for topic in topics if topic not in self._subscribed]
            if missing:
                self._expect_confirmations(missing)
                await pubsub.subscribe(*[self._prefix + topic for topic in missing])
            return [self._confirmations[topic][-1] for topic in topics if topic in self._confirmations]

    def _expect_confirmations(self, topics: list[str]) -> None:
        loop = asyncio.get_running_loop()
        for topic in topics:
            self._subscribed.add(topic)
            self._confirmations.setdefault(topic, deque()).append(loop.create_future())
        metrics.TOPICS_SUBSCRIBED.set(len(self._subscribed))

    async def _flush_unsubscribes(self) -> None:
        while self._to_unsubscribe:
            async with self._lock:
                topics = [
                    topic
                    for topic in self._to_unsubscribe
                    if topic not in self.hub.topic_clients and topic in self._subscribed
                ]
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

    def _confirm(self, channel: bytes) -> None:
        topic = self._topic(channel)
        queue = self._confirmations.get(topic)
        if queue:
            future = queue.popleft()
            if not future.done():
                future.set_result(None)
            if not queue:
                del self._confirmations[topic]

    async def read_forever(self) -> None:
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
                was_connected = self._connected.is_set()
                await self._disconnected()
            if was_connected:
                delay = BACKOFF_MIN
            await asyncio.sleep(delay * (1 + random.random() / 2))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _connect_and_read(self) -> None:
        pubsub = self._redis.pubsub()
        async with self._lock:
            self._pubsub = pubsub
            topics = list(self.hub.topic_clients)
            self._expect_confirmations(topics)
            await pubsub.connect()  # type: ignore[no-untyped-call]
            if topics:
                await pubsub.subscribe(*[self._prefix + topic for topic in topics])
            watermark = await history.read_current_id(self._commands)
            # Redis answers in order: when this PONG arrives, every SUBSCRIBE
            # above is in force.
            await pubsub.ping()

        buffered: list[Message] = []
        while True:
            raw = await pubsub.get_message(timeout=IDLE_PING)
            if raw is None:
                raise TimeoutError("no answer to PING from Redis")
            kind = raw["type"]
            if kind == "message":
                message = self._parse(raw)
                if message is not None:
                    buffered.append(message)
            elif kind == "subscribe":
                self._confirm(raw["channel"])
            elif kind == "pong":
                break

        if self._ever_connected:
            # Reconnected: first what was published while we were away, then
            # what arrived during the handshake (duplicates are dropped).
            if self.hub.last_key is not None:
                await self._fill_gap(topics)
            for message in buffered:
                self.hub.dispatch(message)
            metrics.REDIS_RECONNECTS.inc()
            logger.info("events hub: reconnected to Redis, %d topics", len(topics))
        else:
            for message in buffered:
                self.hub.dispatch(message)
            self._advance(watermark)
        self._ever_connected = True
        self._connected.set()
        metrics.HUB_CONNECTED.set(1)
        await self._read_loop(pubsub)

    async def _read_loop(self, pubsub: PubSub) -> None:
        watermark: str | None = None
        while True:
            raw = await pubsub.get_message(timeout=IDLE_PING)
            if raw is None:
                if watermark is not None:
                    raise TimeoutError("no answer to PING from Redis")
                # Idle: check the connection, and advance last_key to the
                # newest id once the PONG proves we have read up to there.
                watermark = await history.read_current_id(self._commands)
                await pubsub.ping()
                continue
            kind = raw["type"]
            if kind == "message":
                message = self._parse(raw)
                if message is not None:
                    self.hub.dispatch(message)
            elif kind == "pong":
                if watermark is not None:
                    self._advance(watermark)
                    watermark = None
            elif kind == "subscribe":
                self._confirm(raw["channel"])

    def _advance(self, watermark: str) -> None:
        key = parse_id(watermark)
        if self.hub.last_key is None or key > self.hub.last_key:
            self.hub.last_key = key

    async def _fill_gap(self, topics: list[str]) -> None:
        """After a reconnect: deliver what was published while we were away (in bounded batches)."""
        assert self.hub.last_key is not None
        position = format_key(self.hub.last_key)
        delivered = 0
        while True:
            batch = await history.read_batch(self._commands, position, topics)
            if batch.reset is not None:
                logger.warning("events hub: events were lost while disconnected; clients get a reset")
                self.hub.reset_all(batch.reset)
                return
            for message in batch.events:
                self.hub.dispatch(message)
            delivered += len(batch.events)
            if not batch.more:
                break
            position = batch.position
        if delivered:
            logger.info("events hub: delivered %d events missed while disconnected", delivered)

    async def _disconnected(self) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        metrics.HUB_CONNECTED.set(0)
        async with self._lock:
            for queue in self._confirmations.values():
                for future in queue:
                    if not future.done():
                        future.set_exception(HubUnavailable("Redis connection lost"))
                        future.exception()  # retrieved: no "never retrieved" log
            self._confirmations.clear()
            self._subscribed.clear()
            metrics.TOPICS_SUBSCRIBED.set(0)
            pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            except (redis.RedisError, OSError):
                pass
        if was_connected and not self.hub.closing:
            logger.warning("events hub: disconnected from Redis; open streams stay open and keep their heartbeats")
