"""Clients of a Redis Cluster (``redis+cluster://`` / ``rediss+cluster://``).

The URL is parsed (and masked) by ``events/redis_url.py``, kind ``cluster``:
any reachable nodes as seeds; the client discovers the rest (``CLUSTER
SLOTS``) and follows the cluster as it changes (``MOVED``/``ASK``, failover).
``rediss+cluster://`` connects with TLS (``ssl_ca_certs`` etc. in the query
string, as for ``rediss://``). Credentials apply to every node.

Clients are made lazily like the single-node ones: one synchronous client per
process and URL, one asyncio client per event loop and URL. The hub's pub/sub
connections are separate plain clients, one per primary (``node_client``).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from ...conf import conf
from ..connection import redis_location

T = TypeVar("T")

SCHEMES = ("redis+cluster", "rediss+cluster")
# Fail fast like the single-node client, but allow the retries a cluster
# client needs to follow a redirection or a failover it has just noticed.
_OPTIONS: dict[str, Any] = {"socket_connect_timeout": 1.0, "socket_timeout": 5.0}
_BACKOFF = ExponentialBackoff(cap=0.2, base=0.05)
# Connections per node in one process's command pool (the hub's pub/sub
# connections are not in it). redis-py's asyncio cluster client raises
# MaxConnectionsError rather than wait for a free one, so commands go through
# a per-loop semaphore of the same size (``run_command``): a burst waits its
# turn instead.
MAX_CONNECTIONS_PER_NODE = 32


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES


def node_options() -> dict[str, Any]:
    """Connection options (credentials, TLS) shared by every node of the configured cluster."""
    location = redis_location()
    options: dict[str, Any] = {"username": location.username, "password": location.password}
    if location.tls:
        options.update(ssl=True, **location.tls_options)
    return options


def seeds() -> tuple[tuple[str, int], ...]:
    """The nodes named in ``REDIS_URL``."""
    return redis_location().addresses


_sync_clients: dict[str, redis.cluster.RedisCluster] = {}
_sync_lock = threading.Lock()
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, redis.asyncio.cluster.RedisCluster]] = (
    weakref.WeakKeyDictionary()
)


def get_sync_cluster() -> redis.cluster.RedisCluster:
    url = conf.REDIS_URL
    with _sync_lock:
        client = _sync_clients.get(url)
        if client is None:
            client = redis.cluster.RedisCluster(
                startup_nodes=[redis.cluster.ClusterNode(host, port) for host, port in seeds()],  # type: ignore[no-untyped-call]
                require_full_coverage=False,
                retry=Retry(_BACKOFF, 2),
                max_connections=MAX_CONNECTIONS_PER_NODE,
                **_OPTIONS,
                **node_options(),
            )
            _sync_clients[url] = client
        return client


def get_async_cluster() -> redis.asyncio.cluster.RedisCluster:
    loop = asyncio.get_running_loop()
    url = conf.REDIS_URL
    clients = _async_clients.setdefault(loop, {})
    client = clients.get(url)
    if client is None:
        client = redis.asyncio.cluster.RedisCluster(
            startup_nodes=[redis.asyncio.cluster.ClusterNode(host, port) for host, port in seeds()],
            require_full_coverage=False,
            retry=AsyncRetry(_BACKOFF, 2),
            max_connections=MAX_CONNECTIONS_PER_NODE,
            **_OPTIONS,
            **node_options(),
        )
        clients[url] = client
    return client


_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _gate() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Semaphore(MAX_CONNECTIONS_PER_NODE)
    return gate


async def run_command(command: Callable[[redis.asyncio.cluster.RedisCluster], Awaitable[T]]) -> T:
    """Run ``command(client)`` on this loop's asyncio cluster client: gated, and never cut off half-way.

    Two redis-py behaviours are worked around here. Commands issued while the
    client discovers the cluster (its first use) run on seed connections that
    the discovery then closes, so the first caller initializes the client
    while the others wait. And a connection goes back to the pool even when
    the command awaiting its reply is cancelled (a client that goes away
    mid-replay), so the next command on it would read a stale reply: the
    command runs in its own task, shielded; a cancelled caller stops waiting,
    the command still completes (within the socket timeout).
    """

    async def gated() -> T:
        async with _gate():
            return await command(await _initialized())

    task = asyncio.ensure_future(gated())
    # If the caller is cancelled, nobody awaits the task: retrieve its outcome.
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return await asyncio.shield(task)


_init_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
_initialized_clients: weakref.WeakSet[redis.asyncio.cluster.RedisCluster] = weakref.WeakSet()


async def _initialized() -> redis.asyncio.cluster.RedisCluster:
    client = get_async_cluster()
    if client not in _initialized_clients:
        lock = _init_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with lock:
            if client not in _initialized_clients:
                await client.initialize()
                _initialized_clients.add(client)
    return client


def node_client(host: str, port: int, timeout: float | None = None) -> redis.asyncio.Redis:
    """A plain client of one node, no retries.

    For the hub's pub/sub connection there (no read timeout: the reader
    pings), and for its few commands there (``timeout``).
    """
    return redis.asyncio.Redis(
        host=host,
        port=port,
        retry=AsyncRetry(NoBackoff(), 0),
        socket_connect_timeout=2.0,
        socket_timeout=timeout,
        **node_options(),
    )


async def aclose_clusters() -> None:
    for client in _async_clients.pop(asyncio.get_running_loop(), {}).values():
        await client.aclose()


def close_sync_clusters() -> None:
    with _sync_lock:
        for client in _sync_clients.values():
            client.close()
        _sync_clients.clear()
