"""Redis clients and the names of everything the app keeps in Redis.

Layout (``P`` is ``EVENTS["PREFIX"]``):

- ``P:history`` — one Redis Stream, the bounded history of every topic. Its
  entry id is the event id; fields ``t`` (topic), ``e`` (event name), ``d``
  (the JSON payload as text).
- ``P:topic:<topic>`` — the pub/sub channel of one topic. A message is
  ``<id>\\n<event>\\n<json payload>``.

Clients are made lazily, on first use, never at import. An asyncio client is
bound to the event loop that made it, so there is one per loop (and per URL);
``aclose_clients()`` closes the current loop's. Commands fail fast (short
connect timeout, one retry) so a publish never hangs while Redis is down.
What ``REDIS_URL`` may say (single server, unix socket, TLS, Sentinel) and
how its clients are built is ``redis_url.py``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import weakref
from typing import Any

import redis
import redis.asyncio
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from ..conf import conf
from . import redis_url
from .errors import REDIS_ERRORS

logger = logging.getLogger(__name__)

# Fail fast: a publish should raise within about a second when Redis is down,
# not spend the default ten retries backing off (one quick retry instead).
_COMMAND_OPTIONS: dict[str, Any] = {"socket_connect_timeout": 1.0, "socket_timeout": 5.0, "health_check_interval": 30}
_BACKOFF = ExponentialBackoff(cap=0.2, base=0.05)
# The worker's command pool (history reads, health): connections at most, and
# seconds a command waits for one before failing with the retry-able answer.
# Each command holds a connection for a few milliseconds; Redis runs one at a
# time anyway, so more connections would add no throughput.
POOL_SIZE = 16
POOL_WAIT = 2.0


def history_key(prefix: str | None = None) -> str:
    return f"{conf.PREFIX if prefix is None else prefix}:history"


def newest_key(prefix: str | None = None) -> str:
    """The per-topic newest-id index (see history.py)."""
    return f"{conf.PREFIX if prefix is None else prefix}:newest"


def channel_prefix(prefix: str | None = None) -> str:
    return f"{conf.PREFIX if prefix is None else prefix}:topic:"


def channel_name(topic: str, prefix: str | None = None) -> str:
    return channel_prefix(prefix) + topic


_sync_clients: dict[str, redis.Redis] = {}
_sync_lock = threading.Lock()
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, redis.asyncio.Redis]] = (
    weakref.WeakKeyDictionary()
)


def redis_location() -> redis_url.RedisLocation:
    """``conf.REDIS_URL`` parsed (InvalidRedisURL if it cannot be used; the checks report that first)."""
    return _parse(conf.REDIS_URL)


@functools.lru_cache(maxsize=8)
def _parse(url: str) -> redis_url.RedisLocation:
    return redis_url.parse(url)


def masked_redis_url() -> str:
    """``conf.REDIS_URL`` with its passwords masked: the only form fit for messages and logs."""
    return redis_url.mask(conf.REDIS_URL)


def describe_error(exc: BaseException) -> str:
    """``"Type: message"`` of a Redis error, with the configured passwords masked."""
    text = f"{type(exc).__name__}: {exc}"
    try:
        return redis_location().redact(text)
    except redis_url.InvalidRedisURL:
        return text


def get_sync_client() -> redis.Redis:
    """The process-wide synchronous client (thread-safe, pooled) for ``conf.REDIS_URL``."""
    url = conf.REDIS_URL
    with _sync_lock:
        client = _sync_clients.get(url)
        if client is None:
            client = redis_url.sync_client(_parse(url), retry=Retry(_BACKOFF, 1), **_COMMAND_OPTIONS)
            _sync_clients[url] = client
        return client


def get_async_client() -> redis.asyncio.Redis:
    """The asyncio client of the running event loop for ``conf.REDIS_URL``.

    Its pool is bounded (:data:`POOL_SIZE`): a command waits at most
    :data:`POOL_WAIT` seconds for a free connection, then raises
    ``redis.ConnectionError`` ("No connection available"), which the views
    turn into their retry-able answer. redis-py's default pool would open up
    to 100 connections and then fail at once.
    """
    loop = asyncio.get_running_loop()
    url = conf.REDIS_URL
    clients = _async_clients.setdefault(loop, {})
    client = clients.get(url)
    if client is None:
        client = redis_url.async_client(
            _parse(url), pool_size=POOL_SIZE, pool_wait=POOL_WAIT, retry=AsyncRetry(_BACKOFF, 1), **_COMMAND_OPTIONS
        )
        clients[url] = client
    return client


def new_hub_command_client() -> redis.asyncio.Redis:
    """The hub reader's own client for its few commands (ids, gap filling), one connection.

    Not the shared pool: a burst of clients waiting for that pool must not
    delay the reader into declaring its pub/sub connection dead.
    """
    return redis_url.async_client(_parse(conf.REDIS_URL), retry=AsyncRetry(_BACKOFF, 1), **_COMMAND_OPTIONS)


def new_pubsub_client() -> redis.asyncio.Redis:
    """A dedicated client for the hub's pub/sub connection.

    No automatic retries and no socket timeout: the hub notices a dead
    connection itself (pings) and owns reconnection, backoff and gap filling.
    """
    return redis_url.async_client(
        redis_location(),
        retry=AsyncRetry(NoBackoff(), 0),
        socket_connect_timeout=2.0,
        socket_timeout=None,
    )


# Seconds start-up waits for Redis to answer before going on without it.
STARTUP_CHECK_TIMEOUT = 5.0


async def verify_redis_settings() -> None:
    """At start-up: fail on a Redis setting that cannot work; tolerate Redis being down.

    A certificate that does not verify against ``ssl_ca_certs``, or
    credentials Redis refuses, raise ImproperlyConfigured naming the cause
    (the URL masked), so the server does not start. Redis merely being
    unreachable is logged and tolerated: the hub keeps retrying, and streams
    are served once it answers.
    """
    try:
        location = redis_location()
    except redis_url.InvalidRedisURL as exc:
        raise ImproperlyConfigured(f"EVENTS['REDIS_URL'] ({masked_redis_url()}) cannot be used: {exc}") from None
    try:
        await asyncio.wait_for(get_async_client().ping(), STARTUP_CHECK_TIMEOUT)
    except REDIS_ERRORS as exc:
        if redis_url.is_configuration_error(exc):
            raise ImproperlyConfigured(
                f"Redis at {masked_redis_url()} refused this app's settings: {describe_error(exc)}"
            ) from None
        logger.warning(
            "events: Redis at %s does not answer yet (%s); streams wait for it",
            location.masked_url,
            describe_error(exc),
        )


async def aclose_clients() -> None:
    """Close the running loop's asyncio clients (at shutdown, and in tests)."""
    clients = _async_clients.pop(asyncio.get_running_loop(), {})
    for client in clients.values():
        await redis_url.aclose_client(client)


def close_sync_clients() -> None:
    with _sync_lock:
        for client in _sync_clients.values():
            redis_url.close_client(client)
        _sync_clients.clear()
