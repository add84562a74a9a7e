"""The hub: one Redis pub/sub connection per worker process, shared by all clients.

Clients (open streams and waiting long-polls) attach with their topics. The
hub subscribes to a topic's channel while at least one local client wants it
(reference counting by its set of clients), turns each message into a
:class:`Message` once (one encoded frame) and pushes that same object to every
local client of the topic. One ticker task per process sends heartbeats,
enforces the write timeout and the stream age. The Redis side (connection,
subscriptions, reconnects, filling gaps from the history, dropping
duplicates) is the backend's (``pubsub.py``, or ``cluster/pubsub.py``),
made by the ``connect`` the hub is given. Both see the hub only as its
``pubsub.HubSide`` (``wanted_topics``, ``fan_out``, ``reset_all``,
``reset_topics``). The hub of each event loop is ``backend.get_hub()``.

Lifecycle: ``start()`` (ASGI lifespan, or lazily on first attach) creates the
reader and ticker tasks; ``begin_shutdown()`` refuses new clients, answers
waiting long-polls and ends the streams cleanly at ``EVENTS["DRAIN_RATE"]``;
``stop()`` cancels and awaits the tasks and closes Redis.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection

import redis

from .. import metrics
from ..backends.reader import HubConnection
from ..conf import conf
from ..exceptions import HubUnavailable
from .messages import Message
from .revocations import CONTROL_TOPIC, Revocations
from .subscriber import Subscriber
from .tasks import wait_shared

logger = logging.getLogger("events.hub")

# Seconds a new client waits for the hub to be connected / its SUBSCRIBE
# confirmed before it is told to retry later.
CONNECT_WAIT = 2.0
SUBSCRIBE_WAIT = 5.0
# Seconds between two batches of streams ended while draining (DRAIN_RATE).
DRAIN_TICK = 0.05


class Hub:
    def __init__(self, connect: Callable[[Hub], HubConnection]) -> None:
        # Makes the Redis side on start() (the backend's pub/sub connection;
        # see backend.get_hub, which makes the hub of each event loop).
        self._connect = connect
        self.topic_clients: dict[str, set[Subscriber]] = {}
        self.streams: set[Subscriber] = set()
        self.polls: set[Subscriber] = set()
        self.closing = False
        self.pubsub: HubConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Who opened each client, and the listener of revocations: a client of
        # their control topic while a signed-in client is here (revocations.py).
        self.revocations = Revocations()
        # Ends the streams at EVENTS["DRAIN_RATE"] once shutting down.
        self._drain: asyncio.Task[None] | None = None

    # Lifecycle ----------------------------------------------------------

    @property
    def started(self) -> bool:
        return bool(self._tasks)

    @property
    def connected(self) -> bool:
        return self.pubsub is not None and self.pubsub.connected

    def start(self) -> None:
        if self._tasks or self.closing:
            return
        self.pubsub = self._connect(self)
        self._tasks = [
            asyncio.create_task(self.pubsub.read_forever(), name="events-hub-reader"),
            asyncio.create_task(self._tick_forever(), name="events-hub-ticker"),
        ]

    def begin_shutdown(self, reason: str = "shutdown") -> None:
        """Refuse new clients; answer waiting long-polls now; end streams at ``DRAIN_RATE``. Safe to call twice.

        Every server's stop path calls this. Streams end cleanly (a ``retry:``
        hint, then the end of the body), at most ``EVENTS["DRAIN_RATE"]`` per
        second, so that their clients' reconnects reach the other workers as a
        bounded flow, not a storm; the ticker keeps the others' heartbeats
        going meanwhile. The server exits once the last one has ended.
        """
        if self.closing:
            return
        self.closing = True
        for client in list(self.polls):
            client.close(reason)
        rate = conf.DRAIN_RATE
        if rate <= 0 or len(self.streams) <= rate * DRAIN_TICK:
            for client in list(self.streams):
                client.close(reason)
            return
        self._drain = asyncio.get_running_loop().create_task(self._drain_streams(rate, reason), name="events-drain")

    async def _drain_streams(self, rate: int, reason: str) -> None:
        """Close ``rate`` streams per second, in ticks, until none is left open."""
        loop = asyncio.get_running_loop()
        started = last = loop.time() - DRAIN_TICK
        # No new stream is accepted any more: the ones open now are all there is.
        waiting = list(self.streams)
        logger.info("events: draining %d streams at %d per second", len(waiting), rate)
        closed = 0
        budget = 0.0
        while closed < len(waiting):
            now = loop.time()
            # A late tick (a busy loop) does not catch up in a burst: the rate is a ceiling.
            budget += rate * min(now - last, 2 * DRAIN_TICK)
            last = now
            due = min(len(waiting), closed + int(budget))
            for client in waiting[closed:due]:
                # A stream that ended by itself meanwhile is closed already: no-op.
                client.close(reason)
            budget -= due - closed
            closed = due
            await asyncio.sleep(DRAIN_TICK)
        logger.info("events: drained in %.1f s", loop.time() - started)

    async def stop(self) -> None:
        """Shut down, then cancel and await the hub's tasks and close its connection."""
        self.begin_shutdown()
        # Whatever is still open ends now (the server stops without waiting for the drain).
        for client in [*self.streams, *self.polls]:
            client.close("shutdown")
        tasks = [*self._tasks, *([self._drain] if self._drain is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        self._drain = None
        if self.pubsub is not None:
            await self.pubsub.aclose()
            self.pubsub = None

    # Clients -------------------------------------------------------------

    async def attach(self, client: Subscriber) -> None:
        """Register ``client`` and return once all its topics are live in Redis.

        Raises HubUnavailable (after detaching it) when the process is
        shutting down, over its limits, or cannot reach Redis.
        """
        if self.closing:
            raise HubUnavailable("the server is shutting down")
        if client.is_stream and len(self.streams) >= conf.MAX_STREAMS:
            _count_rejected(client, "limit")
            raise HubUnavailable(f"this worker already serves {len(self.streams)} streams (EVENTS['MAX_STREAMS'])")
        if not client.is_stream and len(self.polls) >= conf.MAX_POLLS:
            _count_rejected(client, "limit")
            raise HubUnavailable(f"this worker already has {len(self.polls)} long-polls waiting (EVENTS['MAX_POLLS'])")
        self.start()
        assert self.pubsub is not None
        if not self.pubsub.connected:
            try:
                await self.pubsub.wait_connected(CONNECT_WAIT)
            except TimeoutError:
                _count_rejected(client, "redis")
                raise HubUnavailable("Redis is unreachable") from None

        (self.streams if client.is_stream else self.polls).add(client)
        (metrics.STREAMS_OPEN if client.is_stream else metrics.POLLS_WAITING).inc()
        for topic in client.topics:
            self.topic_clients.setdefault(topic, set()).add(client)
        topics = client.topics
        if self.revocations.watches(client):
            # Signed in: revocations must reach it from now on.
            self.topic_clients.setdefault(CONTROL_TOPIC, set()).add(self.revocations)
            topics = topics | {CONTROL_TOPIC}
        try:
            waiters = await self.pubsub.subscribe(topics)
            if waiters:
                await wait_shared(waiters, SUBSCRIBE_WAIT)
        except (TimeoutError, HubUnavailable, redis.RedisError, OSError) as exc:
            self.detach(client)
            _count_rejected(client, "redis")
            raise HubUnavailable(f"Redis did not confirm the subscription ({type(exc).__name__})") from None
        except BaseException:
            self.detach(client)
            raise

    def detach(self, client: Subscriber) -> None:
        """Forget ``client``; unsubscribe (soon, in the background) from topics nobody wants.

        Synchronous, cheap and idempotent: it runs in ``finally`` blocks of
        cancelled or garbage-collected streams, where awaiting is not safe.
        """
        self.revocations.forget(client)
        if not self.revocations.registered and CONTROL_TOPIC in self.topic_clients:
            # The last signed-in client left: no revocation concerns this worker.
            del self.topic_clients[CONTROL_TOPIC]
            if self.pubsub is not None:
                self.pubsub.release([CONTROL_TOPIC])
        group = self.streams if client.is_stream else self.polls
        if client not in group:
            return
        group.discard(client)
        (metrics.STREAMS_OPEN if client.is_stream else metrics.POLLS_WAITING).dec()
        unwanted = []
        for topic in client.topics:
            clients = self.topic_clients.get(topic)
            if clients is None:
                continue
            clients.discard(client)
            if not clients:
                del self.topic_clients[topic]
                unwanted.append(topic)
        if unwanted and self.pubsub is not None:
            self.pubsub.release(unwanted)

    # Fan-out (what pubsub.HubSide asks of the hub) ---------------------

    def wanted_topics(self) -> Collection[str]:
        """The topics at least one local client wants (a live view)."""
        return self.topic_clients.keys()

    def fan_out(self, message: Message) -> None:
        """Hand ``message`` to every local client of its topic (the reader dropped duplicates)."""
        metrics.EVENTS_RECEIVED.inc()
        clients = self.topic_clients.get(message.topic) if message.topic is not None else None
        if clients:
            for client in clients:
                client.push(message)
            metrics.EVENTS_DELIVERED.inc(len(clients))

    def reset_all(self, message: Message) -> None:
        """Send ``message`` (a reset) to every client: events may have been lost."""
        for client in [*self.streams, *self.polls]:
            client.push(message)
        self.revocations.push(message)

    def reset_topics(self, topics: list[str], message: Message) -> None:
        """Send ``message`` (a reset) once to every client of any of ``topics``: they may have lost events."""
        for client in {client for topic in topics for client in self.topic_clients.get(topic, ())}:
            client.push(message)

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
                    # half-open): give up on it so its slot is freed. Abort
                    # the connection, so its socket and buffers go too: the
                    # server then reports the disconnect and the stream ends
                    # (logging why) like any other whose client left.
                    client.close("write-timeout")
                    if client.abort is not None:
                        client.abort()
                    elif client.task is not None:
                        client.task.cancel()
                    self.detach(client)
                elif client.deadline is not None and now >= client.deadline:
                    client.close("max-age")
                else:
                    client.heartbeat()


def _count_rejected(client: Subscriber, reason: str) -> None:
    (metrics.STREAMS_REJECTED if client.is_stream else metrics.POLLS_REJECTED).labels(reason).inc()
