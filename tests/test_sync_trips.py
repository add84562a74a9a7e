"""Django's sync calls of concurrent requests share one trip to asgiref's sync thread."""

from __future__ import annotations

import asyncio
import threading
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
