"""``EVENTS["REDIS_URL"]``: every documented form parses; mistakes are check errors; passwords never leak."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
from django.conf import settings
from django.test import override_settings

from events import PublishError, publish
from events.backends.connection import close_sync_clients
from events.backends.redis_url import InvalidRedisURL, mask, parse
from events.checks import check_settings

from .redis_ha import Process
from .servers import ROOT, RedisServer, UvicornServer, free_port, wait_for

SECRET = "pa:ss@w0rd/#?"
QUOTED_SECRET = "pa%3Ass%40w0rd%2F%23%3F"


def test_single_server() -> None:
    location = parse(f"redis://alice:{QUOTED_SECRET}@redis.example:6380/3")
    assert (location.kind, location.tls, location.addresses, location.db) == (
        "single",
        False,
        (("redis.example", 6380),),
        3,
    )
    assert (location.username, location.password) == ("alice", SECRET)
    assert location.masked_url == "redis://alice:***@redis.example:6380/3"


def test_defaults_and_password_only() -> None:
    location = parse("redis://:secret@localhost")
    assert (location.addresses, location.db, location.username, location.password) == (
        (("localhost", 6379),),
        0,
        None,
        "secret",
    )
    assert parse("redis://[::1]:7000/1").addresses == (("::1", 7000),)


def test_unix_socket() -> None:
    location = parse("unix:///run/redis/redis.sock?db=2")
    assert (location.kind, location.path, location.db) == ("unix", "/run/redis/redis.sock", 2)
    assert parse("unix://:secret@/tmp/r.sock").password == "secret"


def test_tls_with_its_query_options(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / name for name in ("ca.crt", "app.crt", "app.key"))
    for path in (ca, cert, key):
        path.write_text("x")
    location = parse(
        f"rediss://:secret@cache.example:6380/0?ssl_ca_certs={ca}&ssl_certfile={cert}&ssl_keyfile={key}"
        "&ssl_cert_reqs=required"
    )
    assert (location.kind, location.tls) == ("single", True)
    assert location.tls_options == {
        "ssl_ca_certs": str(ca),
        "ssl_certfile": str(cert),
        "ssl_keyfile": str(key),
        "ssl_cert_reqs": "required",
    }
    assert location.connection_kwargs()["ssl"] is True
    assert parse("rediss://h/0?ssl_cert_reqs=none").tls_options == {
        "ssl_cert_reqs": "none",
        "ssl_check_hostname": False,
    }


def test_sentinel() -> None:
    location = parse(
        f"redis+sentinel://app:{QUOTED_SECRET}@s1.example:26380,s2.example,[::1]:26381/primary-1/4"
        "?sentinel_password=sentinel-secret"
    )
    assert location.kind == "sentinel"
    assert location.addresses == (("s1.example", 26380), ("s2.example", 26379), ("::1", 26381))
    assert (location.service, location.db) == ("primary-1", 4)
    assert (location.username, location.password, location.sentinel_password) == ("app", SECRET, "sentinel-secret")
    assert location.masked_url == (
        "redis+sentinel://app:***@s1.example:26380,s2.example,[::1]:26381/primary-1/4?sentinel_password=***"
    )
    assert parse("redis+sentinel://127.0.0.1:26379/mymaster").db == 0


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("localhost:6379", "no scheme"),
        ("http://localhost:6379/0", "scheme http:// is unknown"),
        ("redis://localhost:port/0", "port of localhost is 'port'"),
        ("redis://localhost:70000/0", "expected a number from 1 to 65535"),
        ("redis://localhost:6379/zero", "database is 'zero'"),
        ("redis:///0", "host is missing"),
        ("redis://a:1,b:2/0", "takes one host"),
        ("redis://localhost/0?ssl_ca_certs=/etc/ca.pem", "needs a TLS URL"),
        ("redis://localhost/0?sokcet_timeout=1", "query option 'sokcet_timeout' is unknown"),
        ("rediss://localhost/0?ssl_cert_reqs=maybe", "ssl_cert_reqs is 'maybe'"),
        ("rediss://localhost/0?ssl_ca_certs=/no/such/ca.pem", "is not a readable file"),
        ("unix://relative.sock", "absolute socket path"),
        ("unix:///tmp/r.sock?db=x", "database is 'x'"),
        ("redis+sentinel://127.0.0.1:26379", "needs the service name"),
        ("redis+sentinel://127.0.0.1:26379/", "needs the service name"),
        ("redis+sentinel://127.0.0.1:26379/mymaster/0/1", "/SERVICE or /SERVICE/db"),
        ("redis+sentinel://127.0.0.1:26379/mymaster/x", "database is 'x'"),
        ("redis+sentinel://127.0.0.1:26379,/mymaster", "host is missing"),
        ("redis+sentinel://127.0.0.1:26379/mymaster?ssl_ca_certs=x", "needs a TLS URL"),
        ("rediss+sentinel://127.0.0.1:26379/mymaster", "not supported yet"),
        ("redis+cluster://127.0.0.1:7000/1", "only database 0"),
        ("redis+cluster://127.0.0.1:7000?sentinel_password=x", "query option 'sentinel_password' is unknown"),
    ],
)
def test_malformed_urls_are_check_errors_naming_the_mistake(url: str, says: str) -> None:
    with pytest.raises(InvalidRedisURL, match=None) as raised:
        parse(url)
    assert says in str(raised.value)
    with override_settings(EVENTS={"REDIS_URL": url}):
        [error] = [message for message in check_settings() if message.id == "events.E005"]
    assert says in error.msg


@pytest.mark.parametrize(
    "url", ["redis://user:hunter2@localhost:port/0", "user:hunter2@localhost:6379", "redis://user:hun#ter2@localhost"]
)
def test_a_check_error_masks_the_password(url: str) -> None:
    with override_settings(EVENTS={"REDIS_URL": url}):
        [error] = check_settings()
    assert "hunter2" not in error.msg and "hun#ter2" not in error.msg
    assert "user:***@localhost" in error.msg


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://user:hunter2@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:hunter2@host/0", "redis://:***@host/0"),
        ("redis://user@host/0", "redis://user@host/0"),
        ("redis://host/0", "redis://host/0"),
        ("redis://:hun@ter2@host/0", "redis://:***@host/0"),
        ("unix://:hunter2@/tmp/r.sock?db=1", "unix://:***@/tmp/r.sock?db=1"),
        (
            "redis+sentinel://:hunter2@a:1,b:2/m/0?sentinel_password=hunter3&x=1",
            "redis+sentinel://:***@a:1,b:2/m/0?sentinel_password=***&x=1",
        ),
        ("redis://:hun/ter#2@host/0", "redis://:***@host/0"),
        ("user:hunter2@localhost:6379", "user:***@localhost:6379"),
        ("not a url", "not a url"),
    ],
)
def test_mask(url: str, masked: str) -> None:
    assert mask(url) == masked


def test_publish_error_does_not_show_the_password(topic: str) -> None:
    """Before: 'Could not publish ...: Redis at redis://user:PASSWORD@host failed'."""
    url = f"redis://app:hunter2@127.0.0.1:{free_port()}/0"
    with override_settings(EVENTS={**settings.EVENTS, "REDIS_URL": url}):
        try:
            with pytest.raises(PublishError) as raised:
                publish(topic)
        finally:
            close_sync_clients()
    assert "hunter2" not in str(raised.value)
    assert "redis://app:***@127.0.0.1" in str(raised.value)


def test_wrong_password_is_reported_without_the_password(
    own_redis: Callable[[], RedisServer], topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = own_redis()
    with server.client() as client:
        client.config_set("requirepass", "right-one")
    url = f"redis://:wrong-one@127.0.0.1:{server.port}/0"
    with override_settings(EVENTS={**settings.EVENTS, "REDIS_URL": url}), caplog.at_level(logging.DEBUG):
        try:
            with pytest.raises(PublishError) as raised:
                publish(topic)
        finally:
            close_sync_clients()
    assert "wrong-one" not in str(raised.value)
    assert "wrong-one" not in caplog.text


def test_publish_event_command_error_masks_the_password(events_prefix: str, topic: str) -> None:
    env = {
        "REDIS_URL": f"redis://app:hunter2@127.0.0.1:{free_port()}/0",
        "EVENTS_PREFIX": events_prefix,
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "publish_event", topic],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Could not publish" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "app:***@" in result.stderr


def _publish_and_poll(srv: UvicornServer, url: str, topic: str) -> None:
    """Publish through ``url`` from this process; the server at ``srv`` hands the event to a long-poll."""
    with override_settings(EVENTS={**settings.EVENTS, "REDIS_URL": url}):
        try:
            event_id = publish(topic)
        finally:
            close_sync_clients()
    answer = httpx.get(f"{srv.url}/events/poll/?topic={topic}&since=0-0", timeout=10).json()
    assert [event["id"] for event in answer["events"]] == [event_id]


def test_a_password_protected_redis_works_and_its_password_stays_out_of_sight(
    own_redis: Callable[[], RedisServer], start_server: Callable[..., UvicornServer], topic: str
) -> None:
    server = own_redis()
    with server.client() as client:
        client.config_set("requirepass", "s3cret-pw")
    url = f"redis://default:s3cret-pw@127.0.0.1:{server.port}/0"
    srv = start_server({"REDIS_URL": url})
    _publish_and_poll(srv, url, topic)
    # Take Redis away so the hub logs its connection errors, then look everywhere.
    server.stop()
    wait_for(lambda: "disconnected from Redis" in srv.log(), 15, "the hub to log the lost connection")
    health = httpx.get(f"{srv.url}/events/health/", timeout=10)
    metrics = httpx.get(f"{srv.url}/events/metrics/", timeout=10)
    assert (health.status_code, metrics.status_code) == (503, 200)
    for text in (health.text, metrics.text, srv.log()):
        assert "s3cret-pw" not in text


def test_a_unix_socket_url_works_end_to_end(
    tmp_path: Path, start_server: Callable[..., UvicornServer], topic: str
) -> None:
    socket_path = tmp_path / "redis.sock"
    server = Process(
        0,
        tmp_path,
        ["redis-server", "--port", "0", "--unixsocket", str(socket_path), "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        None,
    )  # fmt: skip
    server.client = lambda: redis.Redis(unix_socket_path=str(socket_path), socket_connect_timeout=1)  # type: ignore[method-assign]
    server.start()
    try:
        url = f"unix://{socket_path}?db=3"
        srv = start_server({"REDIS_URL": url})
        _publish_and_poll(srv, url, topic)
        with redis.Redis(unix_socket_path=str(socket_path), db=3) as direct:
            assert direct.exists(f"{settings.EVENTS['PREFIX']}:history")
    finally:
        server.stop()
