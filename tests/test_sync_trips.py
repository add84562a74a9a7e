"""Django's sync calls of concurrent requests share one trip to asgiref's sync thread."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
from asgiref.sync import ThreadSensitiveContext, sync_to_async

from events.serving.sync_trips import SyncTrips


async def test_calls_asked_for_together_go_in_one_trip_and_each_gets_its_result() -> None:
    trips = SyncTrips()
    results = await asyncio.gather(*(trips.call(partial(int.__mul__, i, 2)) for i in range(50)))
    assert results == [i * 2 for i in range(50)]
    assert trips.trips == 1
    assert await trips.call(lambda: "again") == "again"
    assert trips.trips == 2


async def test_calls_made_while_a_trip_is_under_way_go_together_in_the_next() -> None:
    trips = SyncTrips()
    first = asyncio.ensure_future(trips.call(lambda: "first"))
    await asyncio.sleep(0)  # the first trip leaves with one call
    later = [asyncio.ensure_future(trips.call(partial(str, i))) for i in range(20)]
    assert await first == "first"
    assert await asyncio.gather(*later) == [str(i) for i in range(20)]
    assert trips.trips == 2


async def test_they_run_in_asgirefs_sync_thread_in_the_order_asked() -> None:
    trips = SyncTrips()
    order: list[int] = []

    def record(i: int) -> int:
        order.append(i)
        return threading.get_ident()

    idents = await asyncio.gather(*(trips.call(partial(record, i)) for i in range(10)))
    sync_thread = await sync_to_async(threading.get_ident)()
    assert set(idents) == {sync_thread} != {threading.get_ident()}
    assert order == list(range(10))


async def test_an_exception_reaches_only_its_caller() -> None:
    trips = SyncTrips()

    def fail() -> None:
        raise ValueError("mine")

    ok, failed = await asyncio.gather(trips.call(lambda: "fine"), trips.call(fail), return_exceptions=True)
    assert ok == "fine"
    assert isinstance(failed, ValueError)


async def test_a_cancelled_caller_still_has_its_call_run() -> None:
    trips = SyncTrips()
    ran = threading.Event()
    caller = asyncio.ensure_future(trips.call(ran.set))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await trips.call(lambda: None)
    assert ran.is_set()


# request_started: skipped while it would do nothing in the sync thread ------


@pytest.fixture
def fresh_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget which threads trips ran in and which opened a connection (the module keeps both per process).

    The tests then run in a ``ThreadSensitiveContext``: asgiref's shared
    sync thread may hold a database connection from an earlier test, and in
    that context the trips (and the test's own ``sync_to_async`` calls) go
    to a new thread instead.
    """
    from events.serving import sync_trips

    monkeypatch.setattr(sync_trips, "_trip_threads", set())
    monkeypatch.setattr(sync_trips, "_connected_threads", set())


@pytest.mark.usefixtures("fresh_threads")
async def test_request_started_goes_until_it_would_do_nothing_in_the_sync_thread() -> None:
    async with ThreadSensitiveContext():
        from django.core import signals

        trips = SyncTrips()
        await trips.request_started(SyncTrips, {})
        assert trips.trips == 1  # the first: nothing is known of the sync thread yet
        await trips.request_started(SyncTrips, {})
        assert trips.trips == 1  # Django's receivers only, no connection there: skipped

        ran_in: list[int] = []

        def mine(**kwargs: object) -> None:
            ran_in.append(threading.get_ident())

        signals.request_started.connect(mine)
        try:
            await trips.request_started(SyncTrips, {})
        finally:
            signals.request_started.disconnect(mine)
        assert trips.trips == 2  # a receiver of the site's own: sent, in the sync thread
        assert ran_in == [await sync_to_async(threading.get_ident)()]


@pytest.mark.usefixtures("fresh_threads")
async def test_once_the_sync_thread_opened_a_connection_request_started_always_goes() -> None:
    async with ThreadSensitiveContext():
        from django.db import connection
        from django.db.backends.signals import connection_created

        trips = SyncTrips()
        await trips.request_started(SyncTrips, {})
        await trips.request_started(SyncTrips, {})
        assert trips.trips == 1
        # What Django sends when a connection opens, sent from the sync thread
        # (where a session or an authorization hook would query).
        await sync_to_async(partial(connection_created.send, sender=type(connection), connection=connection))()
        await trips.request_started(SyncTrips, {})
        await trips.request_started(SyncTrips, {})
        assert trips.trips == 3


# request_finished: skipped too while it would do nothing ----------------------


def in_a_fresh_context(test: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """Run ``test`` in an empty ``contextvars`` context, with a sync thread of its own.

    As a request's task has it: no cache used and no urlconf set yet (an
    earlier test may have done both in the test run's own context).
    """

    async def run() -> None:
        async with ThreadSensitiveContext():
            await test()

    @functools.wraps(test)
    async def wrapper() -> None:
        await contextvars.Context().run(asyncio.ensure_future, run())

    return wrapper


@pytest.mark.usefixtures("fresh_threads")
@in_a_fresh_context
async def test_request_finished_goes_until_it_would_do_nothing() -> None:
    from django.core import signals

    trips = SyncTrips()
    await trips.request_finished(SyncTrips)
    assert trips.trips == 1  # nothing is known of the sync thread yet
    await trips.request_finished(SyncTrips)
    assert trips.trips == 1  # Django's receivers only, nothing for them to do: skipped

    ran: list[str] = []

    def mine(**kwargs: object) -> None:
        ran.append("mine")

    signals.request_finished.connect(mine)
    try:
        await trips.request_finished(SyncTrips)
    finally:
        signals.request_finished.disconnect(mine)
    assert (trips.trips, ran) == (2, ["mine"])  # a receiver of the site's own: sent


@pytest.mark.usefixtures("fresh_threads")
@in_a_fresh_context
async def test_request_finished_goes_when_the_request_set_a_urlconf_or_used_a_cache() -> None:
    from django.core.cache import caches
    from django.urls import get_urlconf, set_urlconf

    trips = SyncTrips()
    await trips.request_finished(SyncTrips)
    assert trips.trips == 1

    async def a_request_that(does: str) -> None:
        # Its own context, as a request's task has: what it sets stays there.
        if does == "urlconf":
            set_urlconf("tests.lean_chain")
        else:
            caches["default"].get("anything")
        await trips.request_finished(SyncTrips)

    await asyncio.ensure_future(a_request_that("urlconf"))
    assert trips.trips == 2
    await asyncio.ensure_future(a_request_that("cache"))
    assert trips.trips == 3
    assert get_urlconf() is None and not caches.all(initialized_only=True)  # ours untouched
    await trips.request_finished(SyncTrips)
    assert trips.trips == 3


@pytest.mark.usefixtures("fresh_threads")
@in_a_fresh_context
async def test_once_the_sync_thread_opened_a_connection_request_finished_always_goes() -> None:
    from django.db import connection
    from django.db.backends.signals import connection_created

    trips = SyncTrips()
    await trips.request_finished(SyncTrips)
    await sync_to_async(partial(connection_created.send, sender=type(connection), connection=connection))()
    await trips.request_finished(SyncTrips)
    await trips.request_finished(SyncTrips)
    assert trips.trips == 3
