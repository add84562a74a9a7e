"""Futures that Redis's (S)SUBSCRIBE confirmations resolve, per topic, in order.

The reader (``reader.py``, once per connection on either backend) sends a
SUBSCRIBE, hands the hub a future, and resolve it when Redis confirms. Redis
confirms a topic's SUBSCRIBEs in the order they were sent, so each topic has
a queue of futures: a confirmation resolves the oldest. When the connection
(or the topic's shard) goes, the futures fail with ``HubUnavailable``, and
the clients waiting on them are refused (they retry).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from ..exceptions import HubUnavailable


class Confirmations:
    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        # Per topic, one future per SUBSCRIBE not yet confirmed, oldest first.
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}

    def expect(self, topic: str) -> asyncio.Future[None]:
        """A future for a SUBSCRIBE of ``topic`` about to be sent."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(topic, deque()).append(future)
        return future

    def latest(self, topic: str) -> asyncio.Future[None] | None:
        """The future of ``topic``'s newest SUBSCRIBE, or None when every one is confirmed."""
        queue = self._waiting.get(topic)
        return queue[-1] if queue else None

    def confirm(self, topic: str) -> None:
        """Redis confirmed a SUBSCRIBE of ``topic``: resolve the oldest future."""
        queue = self._waiting.get(topic)
        if queue:
            future = queue.popleft()
            if not future.done():
                future.set_result(None)
            if not queue:
                del self._waiting[topic]

    def fail(self, reason: str, topics: Iterable[str] | None = None) -> None:
        """Fail the futures of ``topics`` (None: all) with ``HubUnavailable(reason)``, and forget them."""
        for topic in list(self._waiting) if topics is None else topics:
            for future in self._waiting.pop(topic, ()):
                if not future.done():
                    future.set_exception(HubUnavailable(reason))
                    future.exception()  # retrieved: no "never retrieved" log
