"""Subscriber: what one open stream or waiting long-poll holds in this process.

The hub pushes messages into it; the stream (or poll) takes them out. The
queue is bounded in entries (``EVENTS["QUEUE_SIZE"]``) and in payload bytes
(:data:`QUEUE_BYTES`; one message always fits). Overflow policy:
invalidations coalesce. When a client falls behind by more than the bound, its
queue is reduced to the latest message per topic (what an invalidation client
needs); should that still not fit, it is replaced by one ``reset``. Either way memory
per client is bounded and the hub never waits for a slow client.

Everything here is synchronous except :meth:`wait` and :meth:`flush`, so the
hub's fan-out is a plain loop of ``push`` calls, and cleanup can never block.

Direct writes. A stream served by ``handlers.py`` gives its subscriber the
ASGI ``send`` (:attr:`send`). While the stream's task is parked in
:meth:`wait` with nothing queued, ``push`` and ``heartbeat`` hand the frame
to ``send`` at once, from the hub's loop, instead of waking that task: under
uvicorn a send to a socket that is not paused completes without suspending,
so one pass over the clients writes to all of them. A send that does suspend
(the client is slow) is kept in :attr:`inflight` and the stream's task is
woken to finish it (:meth:`flush`) before it writes anything else; until
then new messages queue as usual, so order and the overflow policy are the
same either way.

Raw writes. Under uvicorn's httptools protocol the stream also gets a
:class:`~events.internals.RawWriter` (:attr:`raw`): a direct write is then
the event's pre-framed HTTP/1.1 chunk (:attr:`Message.chunk`, built once per
event and shared by every client of the topic) written straight to the
connection's transport, which is all uvicorn's ``send`` would do while the
socket is not paused. When it is paused (or the response is over) the write
goes through ``send`` as above, so uvicorn's flow control stays its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection

from .. import metrics
from ..backends.history import Batch
from ..internals import PendingSend, RawWriter, start_coroutine
from ..serving.asgi_types import Send
from .ids import ZERO_KEY, EventKey, parse_id
from .messages import Message, http_chunk
from .sse import encode_comment

HEARTBEAT = encode_comment("heartbeat")
HEARTBEAT_CHUNK = http_chunk(HEARTBEAT)

# Payload bytes one client may have queued (beyond one message) before its
# queue coalesces: with large payloads the entry bound alone would let a
# client that does not read pin QUEUE_SIZE of them.
QUEUE_BYTES = 1024 * 1024

# Distinct topic sets shared by the subscribers that ask for equal ones (most
# clients of a site ask for the same few): one object each, not one per
# client. Bounded; the oldest entry goes first.
TOPIC_SETS_KEPT = 4096
_topic_sets: dict[frozenset[str], frozenset[str]] = {}


def shared_topics(topics: frozenset[str]) -> frozenset[str]:
    """An equal topic set, the same object for every subscriber that asks for it."""
    shared = _topic_sets.get(topics)
    if shared is None:
        if len(_topic_sets) >= TOPIC_SETS_KEPT:
            del _topic_sets[next(iter(_topic_sets))]
        shared = _topic_sets[topics] = topics
    return shared


class Subscriber:
    __slots__ = (
        "_waiter",
        "abort",
        "close_reason",
        "deadline",
        "delivered",
        "heartbeat_due",
        "inflight",
        "is_stream",
        "last_key",
        "pending",
        "queue_size",
        "queued_bytes",
        "raw",
        "send",
        "sending_since",
        "task",
        "topics",
    )

    def __init__(self, topics: frozenset[str], queue_size: int, *, is_stream: bool) -> None:
        self.topics = shared_topics(topics)
        self.queue_size = queue_size
        self.is_stream = is_stream
        self.pending: list[Message] = []
        # Payload bytes in ``pending`` (see QUEUE_BYTES).
        self.queued_bytes = 0
        # Events given to this client (for the log line at the end).
        self.delivered = 0
        self.heartbeat_due = False
        # Set by the hub when this client must end (shutdown, max age).
        self.close_reason: str | None = None
        # Newest event this client has been given: anything not newer is a
        # duplicate (replay overlaps live delivery) and is dropped.
        self.last_key: EventKey = ZERO_KEY
        # Loop time at which the stream started writing a chunk, while it is
        # blocked on the client; None when not writing. For the write timeout.
        self.sending_since: float | None = None
        # Loop time at which the stream should end (max age); None for never.
        self.deadline: float | None = None
        # The task serving this client, so a stuck writer can be cancelled.
        self.task: asyncio.Task[object] | None = None
        # Aborts the stream's connection (see transport.py); None if the server does not allow it.
        self.abort: Callable[[], None] | None = None
        # Set while the stream's task is parked in wait() with nothing to do.
        self._waiter: asyncio.Future[None] | None = None
        # The ASGI send for direct writes (see the module doc); None: never.
        self.send: Send | None = None
        # A direct write that suspended; the stream's task finishes it.
        self.inflight: PendingSend | None = None
        # Raw writes under uvicorn (see the module doc); None: through ``send``.
        self.raw: RawWriter | None = None

    # Called by the hub ---------------------------------------------------

    def push(self, message: Message) -> None:
        if self._waiter is not None and self.send is not None:
            # Parked with an empty queue: write now, what take() would give.
            # (admit(), unrolled: this runs once per client per event.)
            admitted = self._advance(message)
            if admitted is not None:
                if admitted.is_reset:
                    self.given_reset(admitted)
                if self._write_now(admitted.frame, admitted.chunk if self.raw is not None else b""):
                    self.delivered += 1
                else:
                    # The connection broke under this event: end the stream
                    # (its end is logged) rather than drop the event. The
                    # client resumes from the last id it got, before this one.
                    self.close("write-failed")
            return
        self.pending.append(message)
        self.queued_bytes += len(message.data_json)
        if len(self.pending) > self.queue_size or (self.queued_bytes > QUEUE_BYTES and len(self.pending) > 1):
            self._coalesce()
            self.queued_bytes = sum(len(queued.data_json) for queued in self.pending)
        self._wake()

    def heartbeat(self) -> None:
        if self._waiter is not None and self.send is not None and self._write_now(HEARTBEAT, HEARTBEAT_CHUNK):
            return
        self.heartbeat_due = True
        self._wake()

    def close(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        self._wake()

    def _coalesce(self) -> None:
        metrics.CLIENTS_COALESCED.inc()
        latest: dict[str | None, Message] = {message.topic: message for message in self.pending}
        if self.fits(latest.values()):
            kept = set(map(id, latest.values()))
            self.pending = [message for message in self.pending if id(message) in kept]
        else:
            newest = self.pending[-1]
            self.pending = [Message.reset(newest.id, "overflow")]

    def fits(self, messages: Collection[Message]) -> bool:
        """Whether ``messages`` fit in this client's queue (entries and bytes; one message always fits)."""
        return len(messages) <= 1 or (
            len(messages) <= self.queue_size and sum(len(message.data_json) for message in messages) <= QUEUE_BYTES
        )

    def _write_now(self, body: bytes, chunk: bytes) -> bool:
        """Hand ``body`` (``chunk``: framed, for :attr:`raw`) to the client; False (and no more direct writes) if that failed."""
        assert self.send is not None
        try:
            raw = self.raw
            if raw is not None and raw.try_write(chunk):
                return True
            self.inflight = start_coroutine(self.send({"type": "http.response.body", "body": body, "more_body": True}))
        except Exception:
            # Queue it instead: the stream's task sends it and meets the
            # failure in its own context, where it is handled and logged.
            self.send = self.raw = None
            return False
        if self.inflight is not None:
            # The client is slow: its own task finishes this write (flush).
            self.sending_since = asyncio.get_running_loop().time()
            self._wake()
        return True

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # Called by the stream or poll ----------------------------------------

    @property
    def has_work(self) -> bool:
        return bool(self.pending) or self.heartbeat_due or self.close_reason is not None or self.inflight is not None

    async def wait(self) -> None:
        """Wait until there is something to do (message, heartbeat, close, a write to finish).

        The waker clears ``_waiter``; so does a cancelled wait.
        """
        if self.has_work:
            return
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    async def flush(self) -> None:
        """Finish a direct write that suspended (see the module doc), if any."""
        inflight = self.inflight
        if inflight is not None:
            try:
                await inflight
            finally:
                self.inflight = None
                self.sending_since = None

    def replayed(self, batch: Batch) -> None:
        """Move this client's position past one batch of its replay (its events, or its reset).

        Live events queued meanwhile that the replay covers are then dropped
        by :meth:`take`.
        """
        if batch.reset is not None:
            self.last_key = batch.reset.key
        else:
            self.last_key = max(self.last_key, parse_id(batch.position))

    def take(self) -> list[Message]:
        """Remove and return the queued messages that are newer than the last given."""
        pending, self.pending = self.pending, []
        self.queued_bytes = 0
        return [admitted for admitted in map(self.admit, pending) if admitted is not None]

    def admit(self, message: Message) -> Message | None:
        """``message`` as this client gets it, if newer than the last given (which it becomes); else None."""
        admitted = self._advance(message)
        if admitted is not None and admitted.is_reset:
            self.given_reset(admitted)
        return admitted

    def given_reset(self, reset: Message) -> Message:
        """``reset``, handed to this client now (live or replayed): the one place resets are counted."""
        metrics.CLIENTS_RESET.inc()
        return reset

    def _advance(self, message: Message) -> Message | None:
        """The position rule of :meth:`admit` (the cluster's client has its own)."""
        # A reset always passes and restarts the count (after a Redis
        # restart the new history may begin below the old ids).
        if message.key > self.last_key or message.is_reset:
            self.last_key = message.key
            return message
        return None
