"""Identical Redis reads asked for at the same moment share one call.

After an event, every long-poll that got it asks again at once, all with the
same ``since``: thousands of identical history reads in a burst, which would
queue for the worker's small Redis pool and cost a round trip each. Instead,
the first asker starts the read as a task; every identical ask made before
that task has *started* (sent its command) gets the same result.

Why "before it started" keeps replays exact: a poll subscribes first and
reads the history second, so a read answers it only if the read's command
reaches Redis after its subscription was confirmed. Askers call
:meth:`SharedReads.read` only once subscribed, and a read stops taking
askers the moment it starts, before sending anything: every asker's
subscription came first.

The result object is shared: callers must treat it as read-only.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SharedReads(Generic[T]):
    """One in-flight task per key, joined by identical asks until it starts."""

    def __init__(self) -> None:
        self._open: dict[Hashable, asyncio.Task[T]] = {}

    async def read(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        """The result of ``call()``, shared with identical asks (same ``key``) not yet started."""
        task = self._open.get(key)
        if task is None:
            task = asyncio.ensure_future(self._run(key, call))
            # Owned here: awaited by its askers; if all of them were
            # cancelled, its outcome is still collected (no warning).
            task.add_done_callback(_collect)
            self._open[key] = task
        # One asker cancelled (its client left) must not cancel the others' read.
        return await asyncio.shield(task)

    async def _run(self, key: Hashable, call: Callable[[], Awaitable[T]]) -> T:
        # Starting: later askers may have subscribed after this read is sent.
        del self._open[key]
        return await call()


def _collect(task: asyncio.Task[object]) -> None:
    if not task.cancelled():
        task.exception()


_reads: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SharedReads[Any]] = weakref.WeakKeyDictionary()


def shared_reads() -> SharedReads[Any]:
    """The running event loop's shared reads (one per worker process), made on first use."""
    loop = asyncio.get_running_loop()
    reads = _reads.get(loop)
    if reads is None:
        reads = _reads[loop] = SharedReads()
    return reads
