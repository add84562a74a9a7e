"""The hub: one Redis pub/sub connection per worker process, shared by all clients.

Clients (open streams and waiting long-polls) attach with their topics. The
hub subscribes to a topic's channel while at least one local client wants it,
turns each message into a :class:`Message` once (one encoded frame) and pushes
that same object to every local client of the topic. One ticker task per
process sends heartbeats, enforces the write timeout and the stream age.

Nothing is lost across a lost connection. The hub remembers the newest event
id it has seen (``last_key``); after reconnecting and re-subscribing it reads
the history after that id and hands the missed events to its clients, then
drops live duplicates. While it is idle, a periodic PING on the pub/sub
connection both checks the connection and, because Redis answers in order,
lets it advance ``last_key`` safely to an id read just before the PING.

Lifecycle: ``start()`` (ASGI lifespan, or lazily on first attach) creates the
reader and ticker tasks; ``begin_shutdown()`` ends every client cleanly and
refuses new ones; ``stop()`` cancels and awaits the tasks and closes Redis.
"""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from collections import deque
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.client import PubSub

from . import history, metrics
from .conf import conf
from .connection import channel_prefix, get_async_client, new_pubsub_client
from .exceptions import HubUnavailable
from .ids import EventKey, format_key, parse_id
from .messages import Message
from .subscriber import Subscriber

logger = logging.getLogger(__name__)

# Seconds a new client waits for the hub to be connected / its SUBSCRIBE
# confirmed before it is told to retry later.
CONNECT_WAIT = 2.0
SUBSCRIBE_WAIT = 5.0
# Seconds without any message after which the hub PINGs (and, without an
# answer for as long again, declares the connection dead).
IDLE_PING = 5.0
# Reconnect backoff: doubles from MIN to MAX seconds, with jitter.
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0


class Hub:
    def __init__(self) -> None:
        self.topic_clients: dict[str, set[Subscriber]] = {}
        self.streams: set[Subscriber] = set()
        self.polls: set[Subscriber] = set()
        self.last_key: EventKey | None = None
        self.closing = False
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
        self._redis: redis.asyncio.Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe_task: asyncio.Task[None] | None = None
        self._to_unsubscribe: set[str] = set()
        self._ever_connected = False

    # Lifecycle ----------------------------------------------------------

    @property
    def started(self) -> bool:
        return bool(self._tasks)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        if self._tasks or self.closing:
            return
        self._redis = new_pubsub_client()
        self._tasks = [
            asyncio.create_task(self._read_forever(), name="events-hub-reader"),
            asyncio.create_task(self._tick_forever(), name="events-hub-ticker"),
        ]

    def begin_shutdown(self, reason: str = "shutdown") -> None:
        """End every client cleanly now and refuse new ones. Safe to call twice."""
        self.closing = True
        for client in [*self.streams, *self.polls]:
            client.close(reason)

    async def stop(self) -> None:
        """Shut down, then cancel and await the hub's tasks and close its connection."""
        self.begin_shutdown()
        tasks = [*self._tasks, *([self._unsubscribe_task] if self._unsubscribe_task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    # Clients -------------------------------------------------------------

    async def attach(self, client: Subscriber) -> None:
        """Register ``client`` and return once all its topics are live in Redis.

        Raises HubUnavailable (after detaching it) when the process is
        shutting down, over its limits, or cannot reach Redis.
        """
        if self.closing:
            raise HubUnavailable("the server is shutting down")
        if client.is_stream and len(self.streams) >= conf.MAX_STREAMS:
            metrics.STREAMS_REJECTED.labels("limit").inc()
            raise HubUnavailable(f"this worker already serves {len(self.streams)} streams (EVENTS['MAX_STREAMS'])")
        if not client.is_stream and len(self.polls) >= conf.MAX_POLLS:
            metrics.STREAMS_REJECTED.labels("limit").inc()
            raise HubUnavailable(f"this worker already has {len(self.polls)} long-polls waiting (EVENTS['MAX_POLLS'])")
        self.start()
        if not self._connected.is_set():
            try:
                await asyncio.wait_for(self._connected.wait(), CONNECT_WAIT)
            except TimeoutError:
                metrics.STREAMS_REJECTED.labels("redis").inc()
                raise HubUnavailable("Redis is unreachable") from None

        (self.streams if client.is_stream else self.polls).add(client)
        (metrics.STREAMS_OPEN if client.is_stream else metrics.POLLS_WAITING).inc()
        for topic in client.topics:
            self.topic_clients.setdefault(topic, set()).add(client)
        try:
            waiters = await self._subscribe(client.topics)
            if waiters:
                await asyncio.wait_for(asyncio.gather(*waiters), SUBSCRIBE_WAIT)
        except (TimeoutError, HubUnavailable, redis.RedisError, OSError) as exc:
            self.detach(client)
            metrics.STREAMS_REJECTED.labels("redis").inc()
            raise HubUnavailable(f"Redis did not confirm the subscription ({type(exc).__name__})") from None
        except BaseException:
            self.detach(client)
            raise

    def detach(self, client: Subscriber) -> None:
        """Forget ``client``; unsubscribe (soon, in the background) from topics nobody wants.

        Synchronous, cheap and idempotent: it runs in ``finally`` blocks of
        cancelled or garbage-collected streams, where awaiting is not safe.
        """
        group = self.streams if client.is_stream else self.polls
        if client not in group:
            return
        group.discard(client)
        (metrics.STREAMS_OPEN if client.is_stream else metrics.POLLS_WAITING).dec()
        for topic in client.topics:
            clients = self.topic_clients.get(topic)
            if clients is None:
                continue
            clients.discard(client)
            if not clients:
                del self.topic_clients[topic]
                self._to_unsubscribe.add(topic)
        if self._to_unsubscribe and (self._unsubscribe_task is None or self._unsubscribe_task.done()):
            self._unsubscribe_task = asyncio.get_running_loop().create_task(self._flush_unsubscribes())

    # Subscriptions ------------------------------------------------------

    async def _subscribe(self, topics: frozenset[str]) -> list[asyncio.Future[None]]:
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
                    if topic not in self.topic_clients and topic in self._subscribed
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

    def _confirm(self, channel: bytes) -> None:
        topic = channel[len(self._prefix_bytes) :].decode()
        queue = self._confirmations.get(topic)
        if queue:
            future = queue.popleft()
            if not future.done():
                future.set_result(None)
            if not queue:
                del self._confirmations[topic]

    # Fan-out -------------------------------------------------------------

    def dispatch(self, message: Message) -> None:
        """Hand ``message`` to every local client of its topic (unless already seen)."""
        if self.last_key is not None and message.key <= self.last_key and not message.is_reset:
            return
        self.last_key = message.key
        metrics.EVENTS_RECEIVED.inc()
        clients = self.topic_clients.get(message.topic) if message.topic is not None else None
        if clients:
            for client in clients:
                client.push(message)
            metrics.EVENTS_DELIVERED.inc(len(clients))

    def _reset_all(self, message: Message) -> None:
        self.last_key = message.key
        metrics.CLIENTS_RESET.inc(len(self.streams) + len(self.polls))
        for client in [*self.streams, *self.polls]:
            client.push(message)

    # The reader task ----------------------------------------------------

    async def _read_forever(self) -> None:
        delay = BACKOFF_MIN
        while True:
            try:
                await self._connect_and_read()
            except (redis.RedisError, OSError, TimeoutError) as exc:
                state = "connection lost" if self._connected.is_set() else "cannot connect"
                logger.warning("events hub: Redis pub/sub %s (%s: %s)", state, type(exc).__name__, exc)
            finally:
                was_connected = self._connected.is_set()
                await self._disconnected()
            if was_connected:
                delay = BACKOFF_MIN
            await asyncio.sleep(delay * (1 + random.random() / 2))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _connect_and_read(self) -> None:
        assert self._redis is not None
        pubsub = self._redis.pubsub()
        async with self._lock:
            self._pubsub = pubsub
            topics = list(self.topic_clients)
            self._expect_confirmations(topics)
            await pubsub.connect()  # type: ignore[no-untyped-call]
            if topics:
                await pubsub.subscribe(*[self._prefix + topic for topic in topics])
            watermark = await history.read_current_id(get_async_client())
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
                buffered.append(self._parse(raw))
            elif kind == "subscribe":
                self._confirm(raw["channel"])
            elif kind == "pong":
                break

        if self._ever_connected:
            # Reconnected: first what was published while we were away, then
            # what arrived during the handshake (duplicates are dropped).
            if self.last_key is not None:
                await self._fill_gap(topics)
            for message in buffered:
                self.dispatch(message)
            metrics.REDIS_RECONNECTS.inc()
            logger.info("events hub: reconnected to Redis, %d topics", len(topics))
        else:
            for message in buffered:
                self.dispatch(message)
            self._advance(watermark)
        self._ever_connected = True
        self._connected.set()
        metrics.HUB_CONNECTED.set(1)
        await self._read_loop(pubsub)

    async def _read_loop(self, pubsub: PubSub) -> None:
        prefix_length = len(self._prefix_bytes)
        dispatch = self.dispatch
        watermark: str | None = None
        while True:
            raw = await pubsub.get_message(timeout=IDLE_PING)
            if raw is None:
                if watermark is not None:
                    raise TimeoutError("no answer to PING from Redis")
                # Idle: check the connection, and advance last_key to the
                # newest id once the PONG proves we have read up to there.
                watermark = await history.read_current_id(get_async_client())
                await pubsub.ping()
                continue
            kind = raw["type"]
            if kind == "message":
                topic = raw["channel"][prefix_length:].decode()
                dispatch(Message.from_pubsub(topic, raw["data"]))
            elif kind == "pong":
                if watermark is not None:
                    self._advance(watermark)
                    watermark = None
            elif kind == "subscribe":
                self._confirm(raw["channel"])

    def _advance(self, watermark: str) -> None:
        key = parse_id(watermark)
        if self.last_key is None or key > self.last_key:
            self.last_key = key

    def _parse(self, raw: dict[str, Any]) -> Message:
        topic = raw["channel"][len(self._prefix_bytes) :].decode()
        return Message.from_pubsub(topic, raw["data"])

    async def _fill_gap(self, topics: list[str]) -> None:
        """After a reconnect: deliver what was published while we were away."""
        assert self.last_key is not None
        replay = await history.read_after(get_async_client(), format_key(self.last_key), topics)
        if replay.reset is not None:
            logger.warning("events hub: events were lost while disconnected; clients get a reset")
            self._reset_all(replay.reset)
            return
        for message in replay.events:
            self.dispatch(message)
        if replay.events:
            logger.info("events hub: delivered %d events missed while disconnected", len(replay.events))

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
        if was_connected and not self.closing:
            logger.warning("events hub: disconnected from Redis; open streams stay open and keep their heartbeats")

    # The ticker task ----------------------------------------------------

    async def _tick_forever(self) -> None:
        interval = conf.HEARTBEAT
        write_timeout = conf.WRITE_TIMEOUT
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for client in list(self.streams):
                if client.sending_since is not None and now - client.sending_since > write_timeout:
                    # The client stopped reading (or the connection is
                    # half-open): give up on it so its slot is freed.
                    logger.info("events: closing a stream whose client stopped reading")
                    if client.task is not None:
                        client.task.cancel()
                    self.detach(client)
                elif client.deadline is not None and now >= client.deadline:
                    client.close("max-age")
                else:
                    client.heartbeat()


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop (one per worker process), made on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub


def pop_hub() -> Hub | None:
    """Remove and return the running loop's hub (for shutdown and tests)."""
    return _hubs.pop(asyncio.get_running_loop(), None)
