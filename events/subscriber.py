"""Subscriber: what one open stream or waiting long-poll holds in this process.

The hub pushes messages into it; the stream (or poll) takes them out. The
queue is bounded (``EVENTS["QUEUE_SIZE"]``). Overflow policy: invalidations
coalesce. When a client falls behind by more than the bound, its queue is
reduced to the latest message per topic (what an invalidation client needs);
should that still not fit, it is replaced by one ``reset``. Either way memory
per client is bounded and the hub never waits for a slow client.

Everything here is synchronous except :meth:`wait`, so the hub's fan-out is a
plain loop of ``push`` calls, and cleanup can never block.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from . import metrics
from .ids import ZERO_KEY, EventKey
from .messages import Message


class Subscriber:
    __slots__ = (
        "_waiter",
        "abort",
        "close_reason",
        "deadline",
        "heartbeat_due",
        "is_stream",
        "last_key",
        "pending",
        "queue_size",
        "sending_since",
        "task",
        "topics",
    )

    def __init__(self, topics: frozenset[str], queue_size: int, *, is_stream: bool) -> None:
        self.topics = topics
        self.queue_size = queue_size
        self.is_stream = is_stream
        self.pending: list[Message] = []
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
        self._waiter: asyncio.Future[None] | None = None

    # Called by the hub ---------------------------------------------------

    def push(self, message: Message) -> None:
        self.pending.append(message)
        if len(self.pending) > self.queue_size:
            self._coalesce()
        self._wake()

    def heartbeat(self) -> None:
        self.heartbeat_due = True
        self._wake()

    def close(self, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
        self._wake()

    def _coalesce(self) -> None:
        metrics.CLIENTS_COALESCED.inc()
        latest: dict[str | None, Message] = {message.topic: message for message in self.pending}
        if len(latest) <= self.queue_size:
            kept = set(map(id, latest.values()))
            self.pending = [message for message in self.pending if id(message) in kept]
        else:
            newest = self.pending[-1]
            self.pending = [Message.reset(newest.id, "overflow")]
            metrics.CLIENTS_RESET.inc()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # Called by the stream or poll ----------------------------------------

    @property
    def has_work(self) -> bool:
        return bool(self.pending) or self.heartbeat_due or self.close_reason is not None

    async def wait(self) -> None:
        """Wait until there is something to do (message, heartbeat or close).

        The waker clears ``_waiter``; a waiter left by a cancelled wait is
        simply done, and the next wake skips it.
        """
        if self.has_work:
            return
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        await waiter

    def take(self) -> list[Message]:
        """Remove and return the queued messages that are newer than the last given."""
        pending, self.pending = self.pending, []
        fresh = []
        last = self.last_key
        for message in pending:
            # A reset always passes and restarts the count (after a Redis
            # restart the new history may begin below the old ids).
            if message.key > last or message.is_reset:
                fresh.append(message)
                last = message.key
        self.last_key = last
        return fresh
