"""TLS to Redis (``rediss://``): the whole stream / long-poll / publish path, certificates verified.

The test makes a throw-away CA with ``openssl``, a server certificate for
127.0.0.1 and a client certificate, and starts a ``redis-server`` that speaks
TLS only and requires client certificates. A second, unrelated CA stands in
for a wrong ``ssl_ca_certs``: that must stop start-up with a clear error.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from django.conf import settings
from django.test import override_settings

from events import PublishError, publish
from events.backends.connection import close_sync_clients

from .redis_ha import TLSRedis, start_tls_redis
from .servers import ROOT, UvicornServer
from .sse import open_stream


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[TLSRedis]:
    server = start_tls_redis()
    yield server
    server.stop()


@pytest.fixture
def on_tls(tls_redis: TLSRedis) -> Iterator[str]:
    """publish() in this process pointed at the TLS Redis."""
    url = tls_redis.url()
    with override_settings(EVENTS={**settings.EVENTS, "REDIS_URL": url}):
        yield url
    close_sync_clients()


def test_plain_tcp_is_refused_by_the_tls_server(tls_redis: TLSRedis) -> None:
    """The server really speaks TLS only (so the tests below prove TLS is used)."""
    import redis

    with pytest.raises(redis.RedisError):
        redis.Redis(port=tls_redis.process.port, socket_connect_timeout=1, socket_timeout=2).ping()


async def test_stream_poll_and_publish_over_tls(
    on_tls: str, tls_redis: TLSRedis, start_server: Callable[..., UvicornServer], topic: str
) -> None:
    srv = start_server({"REDIS_URL": on_tls})
    health = httpx.get(f"{srv.url}/events/health/", timeout=5).json()
    assert (health["redis"], health["hub"]) == (True, "connected")

    async with open_stream(f"{srv.url}/events/stream/?topic={topic}") as stream:
        await stream.next_frame()
        async with httpx.AsyncClient(timeout=10) as client:
            poll = asyncio.create_task(client.get(f"{srv.url}/events/poll/?topic={topic}&since=0-0"))
            event_id = await asyncio.to_thread(publish, topic, data={"over": "tls"})
            frame = await stream.next_event()
            assert (frame.id, frame.json["data"]) == (event_id, {"over": "tls"})
            answer = (await poll).json()
        assert [event["id"] for event in answer["events"]] == [event_id]
        # Resuming reads the history over TLS too.
    async with open_stream(f"{srv.url}/events/stream/?topic={topic}", headers={"Last-Event-ID": "0-0"}) as again:
        assert (await again.next_event()).id == event_id
    # The event really is in the TLS server's history.
    with tls_redis.client() as direct:
        assert direct.xrange(f"{settings.EVENTS['PREFIX']}:history", event_id, event_id)


def test_a_wrong_ca_stops_the_server_at_start_up_with_a_clear_error(tls_redis: TLSRedis, events_prefix: str) -> None:
    env = {
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "REDIS_URL": tls_redis.url(ca=tls_redis.wrong_ca),
        "EVENTS_PREFIX": events_prefix,
        "PATH": "/usr/bin:/bin",
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "project.asgi:application", "--port", "0", "--lifespan", "on"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert time.monotonic() - started < 30, "start-up hung instead of failing"
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr or "certificate verify failed" in result.stderr, result.stderr
    assert "ImproperlyConfigured" in result.stderr


def test_a_wrong_ca_makes_publish_fail_clearly(tls_redis: TLSRedis, topic: str) -> None:
    with override_settings(EVENTS={**settings.EVENTS, "REDIS_URL": tls_redis.url(ca=tls_redis.wrong_ca)}):
        started = time.monotonic()
        try:
            with pytest.raises(PublishError, match=r"(?i)certificate verify failed"):
                publish(topic)
        finally:
            close_sync_clients()
    assert time.monotonic() - started < 5
