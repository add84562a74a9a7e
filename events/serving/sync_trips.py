"""Django's sync calls of many requests, run in one trip to asgiref's sync thread.

Each request served by ``handlers.py`` makes two sync calls Django makes for
every request: sending ``request_started`` (its receivers, e.g. closing stale
database connections, are sync) and ``response.close()`` (which sends
``request_finished``). Django runs each through ``sync_to_async``: a trip to
asgiref's sync thread and back, two thread switches, which cost more than
everything else a long-poll does. When thousands of polls answer and ask again
at once, those trips are most of the worker's CPU.

Here the calls go to the sync thread in batches: while one trip is under
way, calls queue for the next, which leaves as soon as it is back (group
commit: the busier the worker, the bigger the batches; an idle worker's call
leaves at once). Each call still runs exactly once, in that same thread, in
the order asked, its caller getting its own result or exception. Nothing
changes for the receivers: they run where Django runs them.

Trips that would do nothing are skipped, when the signal's receivers are
only Django's own and the sync thread has never had a database connection:

- ``request_started``'s: ``reset_queries`` and ``close_old_connections`` act
  only on that thread's open connections;
- ``request_finished``'s (for the stream and the waiting long-poll, whose
  responses are sent without ``response.close()``): ``close_old_connections``
  as above, ``close_caches``, which closes the caches the request's context
  initialized (none, checked), and ``reset_urlconf``, which resets the
  request's urlconf (unset, checked).

A site whose event endpoints touch no database (no database sessions, an
authorization hook without queries) saves an eighth of a stream's set-up
CPU and a tenth of a long-poll's. Once a connection is opened in that thread
(Django's ``connection_created`` signal), every request's trips are made
again, for the life of the process.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.core import signals
from django.core.cache import caches
from django.db import close_old_connections, connections, reset_queries
from django.db.backends.signals import connection_created
from django.dispatch import Signal
from django.urls import get_urlconf

from ..internals import context_is_empty, receivers_among, request_finished_stock_receivers

T = TypeVar("T")

Call = tuple[Callable[[], Any], "asyncio.Future[Any]"]


class SyncTrips:
    """Batches of sync calls, one ``sync_to_async`` trip per batch (see the module doc)."""

    def __init__(self) -> None:
        # Calls waiting for the next trip.
        self._queued: list[Call] = []
        # The task making trips while there are calls; None when idle.
        self._traveller: asyncio.Task[None] | None = None
        # Trips made so far (for tests and curiosity).
        self.trips = 0
        # Before any trip can open a connection (see the module doc).
        connection_created.connect(_note_connection, dispatch_uid="events.sync_trips")

    async def request_started(self, sender: type, scope: Mapping[str, Any]) -> None:
        """Send Django's ``request_started`` in the sync thread, unless it would do nothing there (module doc)."""
        if not _only_idle(signals.request_started, sender, _DATABASE_RECEIVERS):
            await self.call(partial(signals.request_started.send, sender=sender, scope=scope))

    async def request_finished(self, sender: type) -> None:
        """Send Django's ``request_finished`` in the sync thread, unless it would do nothing (module doc).

        Call it in the request's own context: that is where the caches and
        the urlconf ``request_finished`` would reset are looked at.
        """
        idle = _only_idle(signals.request_finished, sender, request_finished_stock_receivers()) and (
            context_is_empty() or (get_urlconf() is None and not caches.all(initialized_only=True))
        )
        if not idle:
            await self.call(partial(signals.request_finished.send, sender=sender))

    async def call(self, function: Callable[[], T]) -> T:
        """``function()`` in asgiref's sync thread (thread-sensitive), batched with others' calls."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queued.append((function, future))
        if self._traveller is None:
            self._traveller = loop.create_task(self._travel(), name="events-sync-trips")
            self._traveller.add_done_callback(_collect)
        # A cancelled caller only stops waiting: its call, already queued, still runs.
        return await future

    async def _travel(self) -> None:
        try:
            while self._queued:
                calls, self._queued = self._queued, []
                await self._trip(calls)
        finally:
            self._traveller = None
            # Only if cancelled (the loop is closing): nobody will run these.
            for _, future in self._queued:
                future.cancel()
            self._queued = []

    async def _trip(self, calls: list[Call]) -> None:
        self.trips += 1
        try:
            outcomes = await sync_to_async(_run_all)([function for function, _ in calls])
        except asyncio.CancelledError:
            for _, future in calls:
                future.cancel()
            raise
        except Exception as exc:  # the trip itself failed: every caller hears of it
            for _, future in calls:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), (ok, value) in zip(calls, outcomes, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


# request_started's receivers that act only on the running thread's open database connections.
_DATABASE_RECEIVERS = (reset_queries, close_old_connections)

# The threads trips ran in (asgiref's sync thread), and the threads a database
# connection was opened in. Sets, added to only: a thread's membership never
# goes back.
_trip_threads: set[int] = set()
_connected_threads: set[int] = set()


def _only_idle(signal: Signal, sender: type, idle: tuple[Callable[..., Any], ...]) -> bool:
    """Whether ``signal``'s receivers are all among ``idle`` and the sync thread never had a database connection."""
    if not _trip_threads or not _trip_threads.isdisjoint(_connected_threads):
        return False
    return receivers_among(signal, sender, idle)


def _note_connection(**kwargs: Any) -> None:
    _connected_threads.add(threading.get_ident())


def _note_trip_thread() -> None:
    ident = threading.get_ident()
    if ident in _trip_threads:
        return
    # A connection opened here before the receiver above was connected.
    if any(connection.connection is not None for connection in connections.all(initialized_only=True)):
        _connected_threads.add(ident)
    _trip_threads.add(ident)


def _run_all(functions: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
    _note_trip_thread()
    outcomes: list[tuple[bool, Any]] = []
    for function in functions:
        try:
            outcomes.append((True, function()))
        except Exception as exc:
            outcomes.append((False, exc))
    return outcomes


def _collect(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


_trips: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SyncTrips] = weakref.WeakKeyDictionary()


def sync_trips() -> SyncTrips:
    """The running event loop's batcher, made on first use."""
    loop = asyncio.get_running_loop()
    trips = _trips.get(loop)
    if trips is None:
        trips = _trips[loop] = SyncTrips()
    return trips
