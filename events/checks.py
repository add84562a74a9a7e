"""System checks for ``settings.EVENTS`` (ids ``events.E001``... and ``events.W001``...).

Run by ``manage.py check`` and at server start, so a typo fails loudly
instead of silently using a default.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning
from django.core.checks import register as register_check
from django.utils.deprecation import MiddlewareMixin
from django.utils.module_loading import import_string

from .backends import redis_url
from .conf import declarations

# nginx's default proxy_read_timeout; a heartbeat or long-poll must stay below it.
NGINX_READ_TIMEOUT = 60


# Secret keys anyone can read: the demo project's development key (in its
# public settings.py) and the prefix of the keys ``startproject`` writes into
# a settings file. Whoever knows the key can sign subscribe tokens for any
# topic (and sessions, password reset links...).
PUBLIC_SECRET_KEYS = frozenset({"dev-only-insecure-secret-key-change-me"})
PUBLIC_SECRET_KEY_PREFIX = "django-insecure-"


def register() -> None:
    register_check(check_settings, Tags.compatibility)
    register_check(check_app_order, Tags.compatibility)
    register_check(check_secret_key, Tags.security)


def check_app_order(**kwargs: Any) -> list[CheckMessage]:
    """``events`` must come before ``django.contrib.staticfiles``, or its ``runserver`` is not the one run."""
    from django.apps import apps

    names = [config.name for config in apps.get_app_configs()]
    if "django.contrib.staticfiles" in names and names.index("events") > names.index("django.contrib.staticfiles"):
        return [
            Warning(
                "'events' comes after 'django.contrib.staticfiles' in INSTALLED_APPS, so `manage.py runserver` "
                "is staticfiles' WSGI server, on which the event streams never start.",
                hint="Put 'events' before 'django.contrib.staticfiles' (e.g. INSTALLED_APPS.insert(0, 'events')).",
                id="events.W004",
            )
        ]
    return []


def check_secret_key(**kwargs: Any) -> list[CheckMessage]:
    """``events.E011``: with ``DEBUG`` off, ``SECRET_KEY`` (or a fallback) is a published development key."""
    if settings.DEBUG:
        return []
    keys = [getattr(settings, "SECRET_KEY", ""), *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    for key in keys:
        if isinstance(key, str) and (key in PUBLIC_SECRET_KEYS or key.startswith(PUBLIC_SECRET_KEY_PREFIX)):
            which = "SECRET_KEY" if key == keys[0] else "SECRET_KEY_FALLBACKS"
            return [
                Error(
                    f"{which} is a public development key, and DEBUG is off.",
                    hint="Anyone can sign subscribe tokens (and sessions) with it. Set DJANGO_SECRET_KEY to a "
                    "long random value, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(50))'`.",
                    id="events.E011",
                )
            ]
    return []


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    config = getattr(settings, "EVENTS", {})
    if not isinstance(config, dict):
        return [Error(f"EVENTS must be a dict, got {type(config).__name__}.", id="events.E001")]
    errors: list[CheckMessage] = []
    known = {setting.name for setting in declarations()}
    for key in sorted(set(config) - known):
        errors.append(
            Error(
                f"EVENTS has an unknown key {key!r}.",
                hint=f"Known keys: {', '.join(sorted(known))}.",
                id="events.E002",
            )
        )
    # Type and range of every key, as its declaration in conf.py says; the
    # checks after this one look only at the keys that passed it.
    valid: dict[str, Any] = {}
    for setting in declarations():
        value = config.get(setting.name, setting.default)
        problem = setting.problem(value)
        if problem is None:
            valid[setting.name] = setting.convert(value)
        else:
            errors.append(Error(setting.describe(value, problem), id=setting.check_id))
    errors.extend(_check_values(valid))
    errors.extend(_check_middleware_setting(valid.get("MIDDLEWARE")))
    return errors


def _check_values(valid: dict[str, Any]) -> list[CheckMessage]:
    """What a single key's type cannot say: URL schemes, importable hooks, relations between keys."""
    errors: list[CheckMessage] = []
    url = valid.get("REDIS_URL")
    if url is not None:
        try:
            location = redis_url.parse(url)
        except redis_url.InvalidRedisURL as exc:
            errors.append(
                Error(
                    f"EVENTS['REDIS_URL'] ({redis_url.mask(url)}) cannot be used: {exc}.",
                    hint="redis://[[user]:password@]host:port/db, rediss://… (TLS), unix:///path/redis.sock?db=N, "
                    "redis+sentinel://[[user]:password@]host:port[,host:port…]/SERVICE[/db], "
                    "or redis+cluster://[[user]:password@]host:port[,host:port…] (rediss+cluster:// for TLS).",
                    id="events.E005",
                )
            )
        else:
            prefix = valid.get("PREFIX")
            if location.kind == "cluster" and prefix is not None and ("{" in prefix or "}" in prefix):
                errors.append(
                    Error(
                        f"EVENTS['PREFIX'] is {prefix!r}; on a Redis Cluster it must not contain braces "
                        "(they would choose the hash slot instead of the topic).",
                        id="events.E005",
                    )
                )
    path = valid.get("AUTHORIZE")
    if path is not None:
        try:
            hook = import_string(path)
        except ImportError as exc:
            errors.append(Error(f"EVENTS['AUTHORIZE'] {path!r} cannot be imported: {exc}", id="events.E006"))
        else:
            if not callable(hook):
                errors.append(Error(f"EVENTS['AUTHORIZE'] {path!r} is not callable.", id="events.E006"))
    queue_size, max_topics = valid.get("QUEUE_SIZE"), valid.get("MAX_TOPICS")
    if queue_size is not None and max_topics is not None and queue_size < max_topics:
        errors.append(
            Error(
                f"EVENTS['QUEUE_SIZE'] ({queue_size}) is below EVENTS['MAX_TOPICS'] ({max_topics}).",
                hint="A coalesced queue holds one event per topic; make QUEUE_SIZE at least MAX_TOPICS.",
                id="events.E007",
            )
        )
    for key in ("HEARTBEAT", "LONGPOLL_TIMEOUT"):
        value = valid.get(key)
        if value is not None and value >= NGINX_READ_TIMEOUT:
            errors.append(
                Warning(
                    f"EVENTS[{key!r}] is {value:g} s, not below nginx's default proxy_read_timeout of 60 s.",
                    hint="Proxies will cut the connection; keep it well under their read timeout.",
                    id="events.W001",
                )
            )
    return errors


def _check_middleware_setting(paths: list[str] | None) -> list[CheckMessage]:
    """Each entry of a (well-typed) ``EVENTS["MIDDLEWARE"]`` must import and be async-capable."""
    errors: list[CheckMessage] = []
    for path in paths or []:
        try:
            factory = import_string(path)
        except ImportError as exc:
            errors.append(Error(f"EVENTS['MIDDLEWARE'] entry {path!r} cannot be imported: {exc}", id="events.E008"))
            continue
        if not getattr(factory, "async_capable", False):
            errors.append(
                Error(
                    f"EVENTS['MIDDLEWARE'] entry {path!r} is not async-capable.",
                    hint="List async middleware only, e.g. events.middleware.SessionUserMiddleware.",
                    id="events.E008",
                )
            )
        elif isinstance(factory, type) and issubclass(factory, MiddlewareMixin):
            errors.append(
                Warning(
                    f"EVENTS['MIDDLEWARE'] entry {path!r} runs its hooks in a worker thread (MiddlewareMixin).",
                    hint="That costs a thread trip per request, which this setting exists to avoid.",
                    id="events.W003",
                )
            )
    return errors
