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
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from .conf import conf

# Fail fast: a publish should raise within about a second when Redis is down,
# not spend the default ten retries backing off (one quick retry instead).
_COMMAND_OPTIONS: dict[str, Any] = {"socket_connect_timeout": 1.0, "socket_timeout": 5.0, "health_check_interval": 30}
_BACKOFF = ExponentialBackoff(cap=0.2, base=0.05)


def history_key(prefix: str | None = None) -> str:
    return f"{conf.PREFIX if prefix is None else prefix}:history"


def channel_prefix(prefix: str | None = None) -> str:
    return f"{conf.PREFIX if prefix is None else prefix}:topic:"


def channel_name(topic: str, prefix: str | None = None) -> str:
    return channel_prefix(prefix) + topic


_sync_clients: dict[str, redis.Redis] = {}
_sync_lock = threading.Lock()
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, redis.asyncio.Redis]] = (
    weakref.WeakKeyDictionary()
)


def get_sync_client() -> redis.Redis:
    """The process-wide synchronous client (thread-safe, pooled) for ``conf.REDIS_URL``."""
    url = conf.REDIS_URL
    with _sync_lock:
        client = _sync_clients.get(url)
        if client is None:
            client = redis.Redis.from_url(url, retry=Retry(_BACKOFF, 1), **_COMMAND_OPTIONS)
            _sync_clients[url] = client
        return client


def get_async_client() -> redis.asyncio.Redis:
    """The asyncio client of the running event loop for ``conf.REDIS_URL``."""
    loop = asyncio.get_running_loop()
    url = conf.REDIS_URL
    clients = _async_clients.setdefault(loop, {})
    client = clients.get(url)
    if client is None:
        client = redis.asyncio.Redis.from_url(url, retry=AsyncRetry(_BACKOFF, 1), **_COMMAND_OPTIONS)
        clients[url] = client
    return client


def new_pubsub_client() -> redis.asyncio.Redis:
    """A dedicated client for the hub's pub/sub connection.

    No automatic retries and no socket timeout: the hub notices a dead
    connection itself (pings) and owns reconnection, backoff and gap filling.
    """
    return redis.asyncio.Redis.from_url(
        conf.REDIS_URL,
        retry=AsyncRetry(NoBackoff(), 0),
        socket_connect_timeout=2.0,
        socket_timeout=None,
    )


async def aclose_clients() -> None:
    """Close the running loop's asyncio clients (at shutdown, and in tests)."""
    clients = _async_clients.pop(asyncio.get_running_loop(), {})
    for client in clients.values():
        await client.aclose()


def close_sync_clients() -> None:
    with _sync_lock:
        for client in _sync_clients.values():
            client.close()
        _sync_clients.clear()
