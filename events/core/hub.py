"""The hub: one Redis pub/sub connection per worker process, shared by all clients.

Clients (open streams and waiting long-polls) attach with their topics. The
hub subscribes to a topic's channel while at least one local client wants it
(reference counting by its set of clients), turns each message into a
:class:`Message` once (one encoded frame) and pushes that same object to every
local client of the topic. One ticker task per process sends heartbeats,
enforces the write timeout and the stream age. The Redis side (connection,
subscriptions, reconnects, filling gaps from the history, dropping
duplicates) is the backends' shared reader (``backends/reader.py``, once per
primary on a cluster), made by the ``connect`` the hub is given. It sees the
hub only as its ``reader.HubSide`` (``wanted_topics``, ``fan_out``,
``reset_topics``). The hub of each event loop is ``backend.get_hub()``.

Bursts (see docs/howto/overload.md). While the hub keeps up, ``fan_out``
hands each message to its clients at once, in the reader's call: nothing more
per client than that. Once it has spent :data:`IMMEDIATE` seconds of CPU so
within :data:`WINDOW` (the hub is behind: a burst, a flood), new
messages wait in :attr:`Hub.pending`, where invalidations coalesce: one entry
per topic and event name, the newest (ids still increase per client, so a
resume from any id a client saw is exact). The dispatcher task then delivers
them oldest first, in slices of at most :data:`SLICE_PUSHES` clients, yielding
to the event loop between slices: health checks, other topics' events and new
connections are served in between, and a busy topic holds at most one entry
per event name ahead of another topic's event. ``pending`` is bounded in
entries and bytes (:data:`PENDING_MAX`, :data:`PENDING_BYTES`); beyond, each
topic keeps only its newest event, and beyond that its clients get one
``reset``.

Lifecycle: ``start()`` (ASGI lifespan, or lazily on first attach) creates the
reader, ticker and dispatcher tasks; ``begin_shutdown()`` refuses new
clients, answers waiting long-polls and ends the streams cleanly at
``EVENTS["DRAIN_RATE"]``; ``stop()`` cancels and awaits the tasks and closes
Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection

from .. import metrics
from ..backends.errors import REDIS_ERRORS
from ..backends.reader import HubConnection
from ..conf import conf
from ..exceptions import HubUnavailable
from .messages import Message
from .revocations import CONTROL_TOPIC, Revocations
from .subscriber import Subscriber
from .tasks import cancel_and_wait, wait_shared

logger = logging.getLogger("events.hub")

# Seconds a new client waits for the hub to be connected / its SUBSCRIBE
# confirmed before it is told to retry later.
CONNECT_WAIT = 2.0
SUBSCRIBE_WAIT = 5.0
# What makes ``attach`` refuse a client (it should retry later).
_REFUSED: tuple[type[Exception], ...] = (HubUnavailable, *REDIS_ERRORS)

# The fan-out's pace (see the module doc). Within each WINDOW seconds, the
# hub spends at most IMMEDIATE seconds of the event loop thread's CPU handing
# messages out at once (a message that starts within that budget goes out
# whole: a lone event to many clients is never split); beyond, it is behind:
# messages queue (and coalesce) for the dispatcher, which yields to the event
# loop before each message (for as long as the previous one took) and every
# SLICE_PUSHES clients (a few ms of work). CPU time, not wall time: on a
# machine busy with other processes, time the loop spends preempted is not
# the hub's work and must not make it merge events it could deliver.
WINDOW = 0.1
IMMEDIATE = 0.05
SLICE_PUSHES = 500
# Bounds of the messages waiting while the hub is behind: entries (topic and
# event name pairs) and payload bytes.
PENDING_MAX = 10_000
PENDING_BYTES = 16 * 1024 * 1024
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
        # Messages waiting while the hub is behind, oldest first: (topic,
        # event name) -> (newest message, the topics whose clients get it).
        self.pending: dict[tuple[str | None, str], tuple[Message, tuple[str, ...]]] = {}
        self._pending_bytes = 0
        # The current window (see WINDOW): its start, and seconds spent fanning out in it.
        self._window_start = float("-inf")
        self._window_busy = 0.0
        # True from the first message queued until the dispatcher has
        # delivered the last: meanwhile every message queues, so that each
        # client gets its messages in order.
        self.behind = False
        self._wake_dispatcher = asyncio.Event()
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
            asyncio.create_task(self._dispatch_forever(), name="events-hub-dispatcher"),
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
            # Not ``await task``: a cancellation of the caller must propagate.
            await cancel_and_wait(task)
        self._tasks = []
        self._drain = None
        self.pending.clear()
        self.behind = False
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
            if self.closing:
                # Shutdown began while we waited: it closed the clients it knew, not this one.
                raise HubUnavailable("the server is shutting down")

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
        except _REFUSED as exc:
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

    # Fan-out (what reader.HubSide asks of the hub) ---------------------

    def wanted_topics(self) -> Collection[str]:
        """The topics at least one local client wants (a live view)."""
        return self.topic_clients.keys()

    def fan_out(self, message: Message) -> None:
        """Hand ``message`` to every local client of its topic (the reader dropped duplicates).

        At once while the hub keeps up; else queued, coalescing, for the
        dispatcher (see the module doc). O(1) when queued. Revocations
        (:data:`CONTROL_TOPIC`) always go at once: each names another user
        or session, so merging two would drop one, and they cost nothing to
        hand over (one listener).
        """
        metrics.EVENTS_RECEIVED.inc()
        topic = message.topic
        clients = self.topic_clients.get(topic) if topic is not None else None
        if not clients:
            return
        if topic == CONTROL_TOPIC:
            self.revocations.push(message)
            return
        if not self.behind:
            # The clock, not loop.time(): uvloop's stands still within one turn of the loop.
            started = time.monotonic()
            if started - self._window_start >= WINDOW:
                self._window_start = started
                self._window_busy = 0.0
            if self._window_busy < IMMEDIATE:
                # The common case, and the whole fan-out of an idle hub.
                cpu = time.thread_time()
                for client in clients:
                    client.push(message)
                metrics.EVENTS_DELIVERED.inc(len(clients))
                self._window_busy += time.thread_time() - cpu
                return
        assert topic is not None
        self._queue((topic, message.event), message, (topic,))

    def _queue(self, key: tuple[str | None, str], message: Message, topics: tuple[str, ...]) -> None:
        """Wait in ``pending``, replacing an older message of the same key (which moves to the end)."""
        pending = self.pending
        older = pending.pop(key, None)
        if older is not None:
            self._pending_bytes -= len(older[0].data_json)
            metrics.HUB_COALESCED.inc()
        elif not self.behind:
            self.behind = True
            self._wake_dispatcher.set()
        pending[key] = (message, topics)
        self._pending_bytes += len(message.data_json)
        if len(pending) > PENDING_MAX or self._pending_bytes > PENDING_BYTES:
            self._shrink_pending()

    def _shrink_pending(self) -> None:
        """Over the bounds: the newest event per topic only; if still over, one reset per scope."""
        latest: dict[str | None, tuple[Message, tuple[str, ...]]] = {}
        for (topic, _), entry in self.pending.items():
            latest.pop(topic, None)
            latest[topic] = entry
        size = sum(len(message.data_json) for message, _ in latest.values())
        metrics.HUB_COALESCED.inc(len(self.pending) - len(latest))
        if len(latest) <= PENDING_MAX and size <= PENDING_BYTES:
            self.pending = {(topic, message.event): entry for topic, entry in latest.items() for message in entry[:1]}
            self._pending_bytes = size
            return
        # Their clients re-fetch everything: one reset per scope (a Redis
        # Cluster slot group; single node: one), from the newest event in it.
        merged: dict[object, tuple[Message, set[str]]] = {}
        for message, topics in latest.values():
            scope = message.reset_scope()
            _, seen = merged.pop(scope, (message, set()))
            merged[scope] = (message, seen.union(topics))
        self.pending = {
            (None, f"reset:{scope}"): (message.as_reset("overflow"), tuple(topics))
            for scope, (message, topics) in merged.items()
        }
        self._pending_bytes = sum(len(message.data_json) for message, _ in self.pending.values())

    async def _dispatch_forever(self) -> None:
        """Deliver ``pending``, oldest first, in slices, yielding to the loop between them."""
        while True:
            await self._wake_dispatcher.wait()
            self._wake_dispatcher.clear()
            spent = 0.0
            while self.pending:
                # Let everything else run first, for as long as the last
                # delivery took (at most WINDOW): while behind, the fan-out
                # gets at most about half of the loop, and what arrives
                # meanwhile merges (a flood costs fewer writes, not more).
                await asyncio.sleep(min(spent, WINDOW))
                pending = self.pending
                key = next(iter(pending))
                message, topics = pending.pop(key)
                self._pending_bytes -= len(message.data_json)
                started = time.monotonic()
                await self._deliver_in_slices(message, topics)
                spent = time.monotonic() - started
            # Caught up: the next message goes out at once again, if the
            # window's budget allows (the dispatcher's work counts in it).
            self.behind = False

    async def _deliver_in_slices(self, message: Message, topics: tuple[str, ...]) -> None:
        """Push ``message`` to the clients of ``topics``, yielding to the loop every SLICE_PUSHES clients."""
        clients = self.topic_clients.get(topics[0], set()) if len(topics) == 1 else None
        if clients is not None and len(clients) <= SLICE_PUSHES:
            self._push(message, clients)
            return
        # A copy: clients come and go while the loop runs between slices.
        snapshot = list(clients if clients is not None else {c for t in topics for c in self.topic_clients.get(t, ())})
        for start in range(0, len(snapshot), SLICE_PUSHES):
            if start:
                await asyncio.sleep(0)
            self._push(message, snapshot[start : start + SLICE_PUSHES])

    def _push(self, message: Message, clients: Collection[Subscriber]) -> None:
        started, cpu = time.monotonic(), time.thread_time()
        for client in clients:
            client.push(message)
        metrics.EVENTS_DELIVERED.inc(len(clients))
        if started - self._window_start >= WINDOW:
            self._window_start = started
            self._window_busy = 0.0
        self._window_busy += time.thread_time() - cpu

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
