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

from .conf import DEFAULTS

# (key, minimum, integer only)
_NUMBERS: list[tuple[str, float, bool]] = [
    ("HEARTBEAT", 0.01, False),
    ("LONGPOLL_TIMEOUT", 0.01, False),
    ("HISTORY", 1, True),
    ("MAX_TOPICS", 1, True),
    ("MAX_TOPIC_LENGTH", 1, True),
    ("MAX_PAYLOAD", 2, True),
    ("MAX_STREAMS", 1, True),
    ("MAX_POLLS", 1, True),
    ("MAX_STREAM_AGE", 0, False),
    ("QUEUE_SIZE", 1, True),
    ("WRITE_TIMEOUT", 0.01, False),
    ("RETRY_MS", 0, True),
    ("TOKEN_MAX_AGE", 1, False),
]
# nginx's default proxy_read_timeout; a heartbeat or long-poll must stay below it.
NGINX_READ_TIMEOUT = 60


def register() -> None:
    register_check(check_settings, Tags.compatibility)
    register_check(check_middleware, Tags.compatibility)


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    config = getattr(settings, "EVENTS", {})
    if not isinstance(config, dict):
        return [Error(f"EVENTS must be a dict, got {type(config).__name__}.", id="events.E001")]
    errors: list[CheckMessage] = []
    for key in sorted(set(config) - set(DEFAULTS)):
        errors.append(
            Error(
                f"EVENTS has an unknown key {key!r}.",
                hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
                id="events.E002",
            )
        )
    for key, minimum, integer in _NUMBERS:
        value = config.get(key, DEFAULTS[key])
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or value < minimum:
            expected = "an integer" if integer else "a number"
            errors.append(Error(f"EVENTS[{key!r}] is {value!r}; expected {expected} >= {minimum}.", id="events.E003"))
    for key in ("REDIS_URL", "PREFIX", "AUTHORIZE"):
        value = config.get(key, DEFAULTS[key])
        if not isinstance(value, str) or not value:
            errors.append(Error(f"EVENTS[{key!r}] is {value!r}; expected a non-empty string.", id="events.E004"))
    url = config.get("REDIS_URL", DEFAULTS["REDIS_URL"])
    if isinstance(url, str) and not url.startswith(("redis://", "rediss://", "unix://")):
        errors.append(
            Error(f"EVENTS['REDIS_URL'] is {url!r}; expected a redis://, rediss:// or unix:// URL.", id="events.E005")
        )
    path = config.get("AUTHORIZE", DEFAULTS["AUTHORIZE"])
    if isinstance(path, str) and path:
        try:
            hook = import_string(path)
        except ImportError as exc:
            errors.append(Error(f"EVENTS['AUTHORIZE'] {path!r} cannot be imported: {exc}", id="events.E006"))
        else:
            if not callable(hook):
                errors.append(Error(f"EVENTS['AUTHORIZE'] {path!r} is not callable.", id="events.E006"))
    errors.extend(_check_middleware_setting(config.get("MIDDLEWARE")))
    metrics = config.get("METRICS", DEFAULTS["METRICS"])
    if not isinstance(metrics, bool):
        errors.append(Error(f"EVENTS['METRICS'] is {metrics!r}; expected True or False.", id="events.E010"))
    thresholds = config.get("GC_THRESHOLD", DEFAULTS["GC_THRESHOLD"])
    if thresholds is not None and not (
        isinstance(thresholds, (list, tuple))
        and 1 <= len(thresholds) <= 3
        and all(isinstance(part, int) and not isinstance(part, bool) and part >= 0 for part in thresholds)
    ):
        errors.append(
            Error(
                f"EVENTS['GC_THRESHOLD'] is {thresholds!r}; expected None or up to three integers for gc.set_threshold().",
                id="events.E009",
            )
        )
    queue_size, max_topics = (
        config.get("QUEUE_SIZE", DEFAULTS["QUEUE_SIZE"]),
        config.get("MAX_TOPICS", DEFAULTS["MAX_TOPICS"]),
    )
    if isinstance(queue_size, int) and isinstance(max_topics, int) and queue_size < max_topics:
        errors.append(
            Error(
                f"EVENTS['QUEUE_SIZE'] ({queue_size}) is below EVENTS['MAX_TOPICS'] ({max_topics}).",
                hint="A coalesced queue holds one event per topic; make QUEUE_SIZE at least MAX_TOPICS.",
                id="events.E007",
            )
        )
    for key in ("HEARTBEAT", "LONGPOLL_TIMEOUT"):
        value = config.get(key, DEFAULTS[key])
        if isinstance(value, (int, float)) and value >= NGINX_READ_TIMEOUT:
            errors.append(
                Warning(
                    f"EVENTS[{key!r}] is {value} s, not below nginx's default proxy_read_timeout of 60 s.",
                    hint="Proxies will cut the connection; keep it well under their read timeout.",
                    id="events.W001",
                )
            )
    return errors


def _check_middleware_setting(value: object) -> list[CheckMessage]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or not all(isinstance(path, str) for path in value):
        return [Error(f"EVENTS['MIDDLEWARE'] is {value!r}; expected None or a list of dotted paths.", id="events.E008")]
    errors: list[CheckMessage] = []
    for path in value:
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


def check_middleware(**kwargs: Any) -> list[CheckMessage]:
    if "django.middleware.gzip.GZipMiddleware" in getattr(settings, "MIDDLEWARE", []):
        return [
            Warning(
                "GZipMiddleware compresses text/event-stream responses, which can hold events back.",
                hint="Remove it, or exclude the events URLs from compression.",
                id="events.W002",
            )
        ]
    return []
