"""Publishing: append an event to the history and announce it, in one round trip.

A server-side Lua script does both ``XADD`` (the bounded history) and
``PUBLISH`` (live delivery; ``SPUBLISH`` on a Redis Cluster) atomically, so
history and live delivery never disagree and the id a client sees live is the
id it resumes from. The script itself belongs to the backend (``single.py``,
``cluster/publishing.py``); this module validates and encodes.

``publish`` works from sync code (views, shells, management commands, Celery
tasks); ``apublish`` from async code. ``publish_on_commit`` defers the publish
until the current database transaction commits, so clients that re-fetch on
the invalidation never read the old rows.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any, Protocol

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils.asyncio import async_unsafe

from . import metrics
from .backends.active import get_backend
from .backends.connection import describe_error, masked_redis_url
from .backends.errors import REDIS_ERRORS
from .conf import conf
from .exceptions import PublishError
from .http.topics import validate_event_name, validate_topic

DEFAULT_EVENT = "invalidate"


def _prepare(topic: str, data: Any, event: str) -> str:
    """Validate a publish; return its payload as JSON text."""
    validate_topic(topic)
    validate_event_name(event)
    try:
        payload = json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"Event data for topic {topic!r} is not JSON-serialisable: {exc}") from exc
    size = len(payload.encode())
    if size > conf.MAX_PAYLOAD:
        raise ValueError(
            f"Event data for topic {topic!r} is {size} bytes of JSON; the limit (EVENTS['MAX_PAYLOAD']) is "
            f"{conf.MAX_PAYLOAD}. Publish an invalidation and let clients fetch the data."
        )
    return payload


class Recorder(Protocol):
    """Sees every publish while registered (``events.testing.capture_events``)."""

    publishes: bool  # also publish to Redis; False: nothing reaches Redis

    def record(self, topic: str, event: str, payload: str, event_id: str) -> None: ...


# The active recorders: one process-wide list, not a context variable, so that
# publishes made in other threads (sync_to_async, on_commit callbacks run by
# the test client) are recorded too. Only events.testing changes it.
recorders: list[Recorder] = []
_fake_ids = itertools.count(1)


def _captured_only(topic: str, event: str, payload: str) -> str | None:
    """While every active recorder keeps events from Redis: record the publish, return a made-up id."""
    active = list(recorders)
    if not active or any(recorder.publishes for recorder in active):
        return None
    # An id of the usual form, increasing; nothing was stored anywhere.
    event_id = f"{int(time.time() * 1000)}-{next(_fake_ids)}"
    _record(active, topic, event, payload, event_id)
    return event_id


def _record(active: list[Recorder], topic: str, event: str, payload: str, event_id: str) -> str:
    for recorder in active:
        recorder.record(topic, event, payload, event_id)
    return event_id


def publish_failed(topic: str, exc: BaseException) -> PublishError:
    """The PublishError for a Redis failure while publishing to ``topic`` (the URL masked)."""
    return PublishError(
        f"Could not publish to topic {topic!r}: Redis at {masked_redis_url()} failed ({describe_error(exc)})."
    )


# A blocking Redis round trip must not stall an event loop: from async code,
# publish() raises Django's SynchronousOnlyOperation, as the ORM does.
_SYNC_ONLY = "publish() blocks on Redis; from async code use `await apublish(...)`."


@async_unsafe(_SYNC_ONLY)
def publish(topic: str, data: Any = None, event: str = DEFAULT_EVENT) -> str:
    """Publish ``event`` on ``topic`` with an optional JSON-serialisable payload; return its id.

    One Redis round trip: the event is appended to the bounded history and
    published to the topic's subscribers atomically, so replay and live
    delivery never disagree. ``data`` is anything ``DjangoJSONEncoder``
    serialises (dates, decimals, UUIDs), at most ``MAX_PAYLOAD`` bytes.

    Raises ValueError/TypeError for bad arguments and PublishError when Redis
    cannot be reached (within about a second, never hanging). Called from a
    running event loop it raises Django's ``SynchronousOnlyOperation``: use
    :func:`apublish` there. Inside a transaction, prefer
    :func:`publish_on_commit`.

    Example::

        from events import publish

        event_id = publish("board", {"tracker": "spiders"})  # "1795823576898-0"
    """
    payload = _prepare(topic, data, event)
    captured = _captured_only(topic, event, payload)
    if captured is not None:
        return captured
    try:
        event_id = get_backend().publish(topic, event, payload)
    except REDIS_ERRORS as exc:
        raise publish_failed(topic, exc) from exc
    metrics.EVENTS_PUBLISHED.inc()
    return _record(list(recorders), topic, event, payload, event_id)


async def apublish(topic: str, data: Any = None, event: str = DEFAULT_EVENT) -> str:
    """Async version of :func:`publish`, for async views and tasks.

    Example::

        from events import apublish

        async def rename(request, slug):
            ...
            await apublish("board", {"tracker": slug})
    """
    payload = _prepare(topic, data, event)
    captured = _captured_only(topic, event, payload)
    if captured is not None:
        return captured
    try:
        event_id = await get_backend().apublish(topic, event, payload)
    except REDIS_ERRORS as exc:
        raise publish_failed(topic, exc) from exc
    metrics.EVENTS_PUBLISHED.inc()
    return _record(list(recorders), topic, event, payload, event_id)


@async_unsafe(_SYNC_ONLY)
def publish_on_commit(topic: str, data: Any = None, event: str = DEFAULT_EVENT, using: str | None = None) -> None:
    """Publish once the current transaction on ``using`` commits; never on rollback.

    Outside a transaction (autocommit) it publishes at once. Arguments are
    checked now, so a mistake raises here rather than after the commit. A
    publish that fails after the commit is logged, not raised: the data is
    already committed and the request should not fail because of it.

    Example::

        from django.db import transaction
        from events import publish_on_commit

        with transaction.atomic():
            tracker.save()
            publish_on_commit("board", {"tracker": tracker.slug})  # sent after COMMIT
    """
    _prepare(topic, data, event)
    transaction.on_commit(lambda: publish(topic, data, event), using=using, robust=True)
