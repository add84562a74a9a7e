"""Shared fixtures: real Redis, real uvicorn servers over TCP, SSE readers.

Every test run gets its own key prefix (``events_prefix``) and every test its
own topics (``topic``), so runs and tests never see each other's events. A
missing service is an error, never a skip.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import pytest_asyncio
import redis
from django.conf import settings
from django.test import override_settings

from events.asgi import shutdown as shutdown_events
from events.backends.connection import close_sync_clients

from .servers import (
    RedisClusterServers,
    RedisServer,
    UvicornServer,
    free_port,
    start_redis_cluster,
    start_redis_server,
    start_uvicorn,
)

REDIS_URL = os.environ.get("TEST_REDIS_URL", os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
RUN_ID = uuid.uuid4().hex[:8]
_counter = itertools.count()

# Short timings so the tests are fast and still prove the point.
SERVER_ENV = {
    "EVENTS_HEARTBEAT": "0.2",
    "EVENTS_LONGPOLL_TIMEOUT": "1.5",
}


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {REDIS_URL} is required for the tests and does not answer: {exc}. Run `make test`.")
    return REDIS_URL


@pytest.fixture(scope="session")
def events_prefix() -> str:
    return f"test-{RUN_ID}"


@pytest.fixture(scope="session", autouse=True)
def _events_settings(redis_url: str, events_prefix: str) -> Iterator[None]:
    """Point the in-process app (publish, hub) at the test Redis and prefix, for the whole session.

    A new ``EVENTS`` dict through ``override_settings`` (never the project's
    dict changed in place), restored at the end.
    """
    from django.conf import settings

    with override_settings(
        EVENTS={**settings.EVENTS, "REDIS_URL": redis_url, "PREFIX": events_prefix, "HEARTBEAT": 0.2}
    ):
        yield
    close_sync_clients()
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{events_prefix}*"):
        client.delete(key)
    client.close()


@pytest_asyncio.fixture(autouse=True)  # not @pytest.fixture: also under asyncio_mode = "strict"
async def _close_loop_resources() -> AsyncIterator[None]:
    """Stop the hub and close the Redis clients bound to this test's event loop."""
    yield
    await shutdown_events()


@pytest.fixture
def topic() -> str:
    """A topic name no other test (or run) uses."""
    return f"t{next(_counter)}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def make_topic() -> Callable[[], str]:
    return lambda: f"t{next(_counter)}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def server(redis_url: str, events_prefix: str) -> Iterator[UvicornServer]:
    """One uvicorn worker for the session, on the run's prefix, with short timings."""
    with start_uvicorn({"REDIS_URL": redis_url, "EVENTS_PREFIX": events_prefix, **SERVER_ENV}) as srv:
        yield srv


@pytest.fixture
def start_server(redis_url: str, events_prefix: str) -> Iterator[Callable[..., UvicornServer]]:
    """Start extra uvicorn servers with their own settings; all stopped at teardown."""
    started: list[Callable[[], None]] = []

    def start(env: dict[str, str] | None = None, args: list[str] | None = None) -> UvicornServer:
        full_env = {"REDIS_URL": redis_url, "EVENTS_PREFIX": events_prefix, **SERVER_ENV, **(env or {})}
        manager = start_uvicorn(full_env, args=args)
        srv = manager.__enter__()

        def stop() -> None:
            manager.__exit__(None, None, None)

        started.append(stop)
        return srv

    yield start
    for stop in reversed(started):
        stop()


@pytest.fixture
def own_redis() -> Iterator[Callable[[], RedisServer]]:
    """Start private redis-servers (for tests that stop or restart Redis)."""
    servers: list[RedisServer] = []

    def start() -> RedisServer:
        srv = start_redis_server(free_port())
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def private_redis(own_redis: Callable[[], RedisServer]) -> Iterator[RedisServer]:
    """A redis-server of our own (its command counts are ours alone), publish() pointed at it."""
    redis_server = own_redis()
    with override_settings(EVENTS={**settings.EVENTS, "REDIS_URL": redis_server.url}):
        yield redis_server
    close_sync_clients()


@pytest.fixture
def private_server(
    private_redis: RedisServer, start_server: Callable[..., UvicornServer]
) -> tuple[RedisServer, UvicornServer]:
    """A uvicorn on :func:`private_redis`, and that redis-server."""
    return private_redis, start_server({"REDIS_URL": private_redis.url})


# Redis Cluster ------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A local Redis Cluster for the session: 3 primaries, one replica each (private ports, loopback)."""
    cluster = start_redis_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_settings(redis_cluster: RedisClusterServers) -> Iterator[RedisClusterServers]:
    """Point the in-process app (publish, hub) at the session's cluster."""
    from django.conf import settings
    from django.test import override_settings

    from events.backends.cluster.connection import close_sync_clusters

    with override_settings(EVENTS={**settings.EVENTS, "REDIS_URL": redis_cluster.url}):
        yield redis_cluster
    close_sync_clusters()


@pytest.fixture
def cluster_server(
    redis_cluster: RedisClusterServers, start_server: Callable[..., UvicornServer], cluster_settings: object
) -> UvicornServer:
    """A uvicorn worker on the session's cluster."""
    return start_server({"REDIS_URL": redis_cluster.url})
