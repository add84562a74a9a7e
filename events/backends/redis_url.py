"""``EVENTS["REDIS_URL"]``: parsing, validation, masking, and the clients it describes.

One place knows what a Redis URL may say. :func:`parse` turns the URL into a
:class:`RedisLocation` (or raises :class:`InvalidRedisURL` naming what is
wrong, never echoing a password); the rest of the app only ever sees that
description, builds its clients with :func:`sync_client` /
:func:`async_client`, and prints the URL with :func:`mask`.

Kinds of location (``RedisLocation.kind``), TLS being a flag on top:

- ``single``: ``redis://[[user]:password@]host[:port][/db]``, or
  ``rediss://…`` for TLS, with the query options ``ssl_ca_certs``,
  ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs`` and
  ``ssl_check_hostname`` (redis-py's names and meanings);
- ``unix``: ``unix://[[user]:password@]/path/redis.sock[?db=N]``;
- ``cluster``: ``redis+cluster://[[user]:password@]host:port[,host:port…]``,
  or ``rediss+cluster://…`` for TLS (with the TLS query options above): any
  reachable nodes of a Redis Cluster as seeds, the credentials those of every
  node; a cluster has only database 0. Its clients are built by
  ``events/cluster/connection.py``;
- ``sentinel``: ``redis+sentinel://[[user]:password@]host:port[,host:port…]/SERVICE[/db]``.
  The hosts are the sentinels (port 26379 by default), ``SERVICE`` the name
  the sentinels monitor, the credentials those of the Redis servers; the
  sentinels' own credentials, when they need any, are the query options
  ``sentinel_password`` (and ``sentinel_username``). Clients ask the
  sentinels for the current primary on every new connection, so after a
  failover they reach the promoted replica by themselves.

"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

Kind = Literal["single", "unix", "sentinel", "cluster"]

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
# Seconds to reach one sentinel, and for it to answer, when asking for the
# primary: a dead sentinel host must not stretch a publish for long.
SENTINEL_TIMEOUT = 1.0
CERT_REQS = ("none", "optional", "required")
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
SENTINEL_OPTIONS = ("sentinel_password", "sentinel_username")
SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("single", False),
    "rediss": ("single", True),
    "unix": ("unix", False),
    "redis+sentinel": ("sentinel", False),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
UNSUPPORTED_SCHEMES = {
    "rediss+sentinel": "TLS to Sentinel is not supported yet; use redis+sentinel:// on a private network",
}
MASK = "***"


class InvalidRedisURL(ValueError):
    """``EVENTS["REDIS_URL"]`` cannot be used; the message says why (and holds no password)."""


@dataclass(frozen=True)
class RedisLocation:
    """Where Redis is and how to talk to it: everything ``REDIS_URL`` says."""

    kind: Kind
    tls: bool
    masked_url: str
    # single: the server; sentinel: the sentinels; cluster: the seed nodes. Empty for unix.
    addresses: tuple[tuple[str, int], ...] = ()
    path: str = ""  # unix: the socket
    service: str = ""  # sentinel: the monitored primary's name
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    # TLS: redis-py's ssl_* keyword arguments, already converted.
    tls_options: dict[str, Any] = field(default_factory=dict)

    def redact(self, text: str) -> str:
        """``text`` (an error message, say) with this location's secrets replaced by ``***``."""
        for secret in (self.password, self.sentinel_password):
            if secret:
                text = text.replace(secret, MASK)
        return text

    def connection_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for a redis-py client of a single or unix location.

        (For a cluster: a plain client of its first seed node, which is all the
        start-up check needs; the app's cluster clients are ``cluster/connection.py``'s.)
        """
        kwargs: dict[str, Any] = {"db": self.db, "username": self.username, "password": self.password}
        if self.kind == "unix":
            kwargs["unix_socket_path"] = self.path
        else:
            kwargs["host"], kwargs["port"] = self.addresses[0]
        if self.tls:
            kwargs.update(ssl=True, **self.tls_options)
        return kwargs

    def sentinel_kwargs(self) -> dict[str, Any]:
        return {
            "username": self.sentinel_username,
            "password": self.sentinel_password,
            "socket_connect_timeout": SENTINEL_TIMEOUT,
            "socket_timeout": SENTINEL_TIMEOUT,
        }


# Masking -------------------------------------------------------------------

# Everything from "?" on: query options whose name ends in "password".
_SECRET_QUERY = re.compile(r"(?P<name>[?&](?:[a-z_]*password))=(?P<value>[^&#]*)", re.IGNORECASE)


def mask(url: str) -> str:
    """``url`` with every password replaced by ``***``; safe on malformed URLs too.

    The user info is everything up to the last ``@`` before the query, so a
    password with an unencoded ``/``, ``#`` or ``@`` is still masked whole.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    else:
        head += sep
    before_query, question, query = rest.partition("?")
    userinfo, at, after = before_query.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        before_query = f"{user}{':' + MASK if colon else ''}@{after}"
    return _SECRET_QUERY.sub(lambda m: f"{m['name']}={MASK}", f"{head}{before_query}{question}{query}")


# Parsing -------------------------------------------------------------------


def parse(url: str) -> RedisLocation:
    """Describe the Redis that ``url`` names; :class:`InvalidRedisURL` if it cannot be used."""
    if not isinstance(url, str) or not url:
        raise InvalidRedisURL("it is empty; expected e.g. redis://127.0.0.1:6379/0")
    masked = mask(url)
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise InvalidRedisURL(
            f"{masked!r} has no scheme; expected redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://"
        )
    if scheme in UNSUPPORTED_SCHEMES:
        raise InvalidRedisURL(f"{scheme}:// is not supported: {UNSUPPORTED_SCHEMES[scheme]}")
    if scheme not in SCHEMES:
        raise InvalidRedisURL(
            f"the scheme {scheme}:// is unknown; "
            "expected redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://"
        )
    kind, tls = SCHEMES[scheme]
    if "#" in rest:
        raise InvalidRedisURL("it has a #fragment, which means nothing here (a '#' in a password must be %23)")
    authority_and_path, _, query = rest.partition("?")
    options = _query(query, masked)
    userinfo, at, hosts_and_path = authority_and_path.rpartition("@")
    if not at:
        userinfo, hosts_and_path = "", authority_and_path
    username, password = _credentials(userinfo)

    allowed = {
        "single": TLS_OPTIONS if tls else (),
        "unix": ("db",),
        "sentinel": SENTINEL_OPTIONS,
        "cluster": TLS_OPTIONS if tls else (),
    }[kind]
    for name in options:
        if name not in allowed:
            if name in TLS_OPTIONS:
                raise InvalidRedisURL(f"the query option {name!r} needs a TLS URL (rediss://)")
            known = ", ".join(allowed) or "none"
            raise InvalidRedisURL(f"the query option {name!r} is unknown here (known for {scheme}://: {known})")

    common: dict[str, Any] = {"kind": kind, "tls": tls, "masked_url": masked, "username": username}
    common["password"] = password
    if kind == "unix":
        path = unquote(hosts_and_path)
        if not path.startswith("/"):
            raise InvalidRedisURL("a unix:// URL needs an absolute socket path, e.g. unix:///run/redis/redis.sock")
        return RedisLocation(**common, path=path, db=_db(options.get("db", "0")))

    netloc, slash, path = hosts_and_path.partition("/")
    if kind == "single":
        if "," in netloc:
            raise InvalidRedisURL(f"{scheme}:// takes one host; for several sentinels use redis+sentinel://")
        address = _address(netloc, DEFAULT_PORT)
        db = _db(path.strip("/") or "0")
        return RedisLocation(**common, addresses=(address,), db=db, tls_options=_tls_options(options))

    if kind == "cluster":
        if path.strip("/") not in ("", "0"):
            raise InvalidRedisURL("a Redis Cluster has only database 0: drop the path of the redis+cluster:// URL")
        seeds = tuple(_address(part, DEFAULT_PORT) for part in netloc.split(","))
        return RedisLocation(**common, addresses=seeds, tls_options=_tls_options(options))

    # sentinel
    sentinels = tuple(_address(part, DEFAULT_SENTINEL_PORT) for part in netloc.split(","))
    parts = [unquote(part) for part in path.split("/")] if slash else []
    if not parts or not parts[0]:
        raise InvalidRedisURL(
            "a redis+sentinel:// URL needs the service name the sentinels monitor: "
            "redis+sentinel://host:26379[,host:port…]/SERVICE[/db]"
        )
    if len(parts) > 2 or (len(parts) == 2 and not parts[1]):
        raise InvalidRedisURL("a redis+sentinel:// path is /SERVICE or /SERVICE/db")
    return RedisLocation(
        **common,
        addresses=sentinels,
        service=parts[0],
        db=_db(parts[1]) if len(parts) == 2 else 0,
        sentinel_username=options.get("sentinel_username"),
        sentinel_password=options.get("sentinel_password"),
    )


def _query(query: str, masked: str) -> dict[str, str]:
    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidRedisURL(f"its query string cannot be read: {masked!r}") from None
    for name, value in pairs:
        if name in options:
            raise InvalidRedisURL(f"the query option {name!r} is given twice")
        options[name] = value
    return options


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None)


def _address(netloc: str, default_port: int) -> tuple[str, int]:
    if not netloc:
        raise InvalidRedisURL("a host is missing (e.g. 127.0.0.1:6379)")
    if netloc.startswith("["):
        host, bracket, port_part = netloc[1:].partition("]")
        if not bracket or (port_part and not port_part.startswith(":")):
            raise InvalidRedisURL(f"the host {netloc!r} is not a valid [IPv6]:port")
        port_text = port_part[1:]
    else:
        host, _, port_text = netloc.partition(":")
        if ":" in port_text:
            raise InvalidRedisURL(f"the host {netloc!r} has several ':' (write an IPv6 address as [addr]:port)")
    if not host:
        raise InvalidRedisURL(f"the host is missing in {netloc!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidRedisURL(f"the port of {host} is {port_text!r}; expected a number from 1 to 65535")
    return host, int(port_text)


def _db(text: str) -> int:
    if not text.isdigit():
        raise InvalidRedisURL(f"the database is {text!r}; expected a number such as 0")
    return int(text)


def _tls_options(options: dict[str, str]) -> dict[str, Any]:
    tls: dict[str, Any] = {}
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if name in options:
            path = options[name]
            if not os.path.isfile(path):
                raise InvalidRedisURL(f"{name}={path!r} is not a readable file")
            tls[name] = path
    if ("ssl_certfile" in tls) != ("ssl_keyfile" in tls):
        raise InvalidRedisURL("a client certificate needs both ssl_certfile and ssl_keyfile")
    if "ssl_cert_reqs" in options:
        value = options["ssl_cert_reqs"].lower()
        if value not in CERT_REQS:
            raise InvalidRedisURL(f"ssl_cert_reqs is {value!r}; expected one of {', '.join(CERT_REQS)}")
        tls["ssl_cert_reqs"] = value
    if "ssl_check_hostname" in options:
        value = options["ssl_check_hostname"].lower()
        if value not in ("true", "false", "1", "0", "yes", "no"):
            raise InvalidRedisURL(f"ssl_check_hostname is {value!r}; expected true or false")
        tls["ssl_check_hostname"] = value in ("true", "1", "yes")
    if tls.get("ssl_cert_reqs") == "none":
        # Not verifying the certificate means not checking its name either.
        tls.setdefault("ssl_check_hostname", False)
    return tls


# Clients -------------------------------------------------------------------


def sync_client(location: RedisLocation, **options: Any) -> redis.Redis:
    """A thread-safe, pooled client; ``options`` are redis-py connection options (timeouts, retry)."""
    if location.kind == "sentinel":
        # One try per sentinel and query: discover_master() moves on to the
        # next sentinel itself, and a publish must not back off behind it.
        sentinel_kwargs = {**location.sentinel_kwargs(), "retry": Retry(NoBackoff(), 0)}
        manager = redis.sentinel.Sentinel(list(location.addresses), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
        client: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call]
            location.service, db=location.db, username=location.username, password=location.password, **options
        )
        return client
    return redis.Redis(**location.connection_kwargs(), **options)


class _BlockingSentinelConnectionPool(
    redis.asyncio.sentinel.SentinelConnectionPool, redis.asyncio.BlockingConnectionPool
):
    """Sentinel's pool (master discovery) with the blocking pool's bound: waits for a free connection."""


def async_client(
    location: RedisLocation, *, pool_size: int | None = None, pool_wait: float | None = None, **options: Any
) -> redis.asyncio.Redis:
    """An asyncio client (bound to the running loop); ``options`` as for :func:`sync_client`.

    With ``pool_size`` its pool holds at most that many connections, and a
    command waits up to ``pool_wait`` seconds for a free one before raising
    ``redis.ConnectionError`` (redis-py's default pool opens up to 100, then
    fails at once).
    """
    bound: dict[str, Any] = {} if pool_size is None else {"max_connections": pool_size, "timeout": pool_wait}
    if location.kind == "sentinel":
        sentinel_kwargs = {**location.sentinel_kwargs(), "retry": AsyncRetry(NoBackoff(), 0)}
        manager = redis.asyncio.sentinel.Sentinel(list(location.addresses), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
        if bound:
            bound["connection_pool_class"] = _BlockingSentinelConnectionPool
        client: redis.asyncio.Redis = manager.master_for(
            location.service, db=location.db, username=location.username, password=location.password, **bound, **options
        )
        return client
    client = redis.asyncio.Redis(**location.connection_kwargs(), **options)
    if bound:
        # The same connections (the class and arguments redis-py derived from
        # ours: TCP, unix or TLS), from a bounded pool that waits.
        pool = client.connection_pool
        client = redis.asyncio.Redis.from_pool(
            redis.asyncio.BlockingConnectionPool(
                connection_class=pool.connection_class, **bound, **pool.connection_kwargs
            )
        )
    return client


async def aclose_client(client: redis.asyncio.Redis) -> None:
    """Close ``client`` and, for Sentinel, its connections to the sentinels."""
    await client.aclose()
    pool = client.connection_pool
    if isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool):
        await pool.sentinel_manager.aclose()


def close_client(client: redis.Redis) -> None:
    """Close ``client`` and, for Sentinel, its connections to the sentinels."""
    client.close()
    pool = client.connection_pool
    if isinstance(pool, redis.sentinel.SentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            sentinel.close()


def is_configuration_error(exc: BaseException) -> bool:
    """Whether ``exc`` (from connecting) means a wrong setting rather than Redis being down.

    A certificate that does not verify, or credentials Redis refuses, will
    not get better by retrying: start-up should fail and say so.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (ssl.SSLCertVerificationError, redis.AuthenticationError)):
            return True
        if isinstance(seen, ssl.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        if isinstance(seen, redis.ResponseError) and str(seen).startswith(("WRONGPASS", "NOAUTH", "NOPERM")):
            return True
        seen = seen.__cause__ or seen.__context__
    # Sentinel folds what each sentinel answered into one MasterNotFoundError.
    return any(sign in str(exc) for sign in ("CERTIFICATE_VERIFY_FAILED", "AuthenticationError", "WRONGPASS"))
