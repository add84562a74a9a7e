"""Access to the app's settings: one Django setting, ``EVENTS``, a dict.

Every key is optional. Each is read when used, not at import time, so
``override_settings(EVENTS={...})`` works in tests. ``checks.py`` validates
the values at start-up; this module only supplies the defaults.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Redis holding the history stream and carrying pub/sub.
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    # Start of every key and channel name, so sites (and tests) can share a Redis.
    "PREFIX": "events",
    # Seconds between heartbeat comments on open streams (nginx cuts at 60 s).
    "HEARTBEAT": 15.0,
    # Seconds a long-poll waits before answering with no events (below nginx's 60 s).
    "LONGPOLL_TIMEOUT": 25.0,
    # Events kept in the history stream for replay (approximate: MAXLEN ~).
    "HISTORY": 10000,
    # Topics one request may ask for.
    "MAX_TOPICS": 16,
    # Longest topic name, in characters.
    "MAX_TOPIC_LENGTH": 128,
    # Largest JSON payload of one event, in bytes.
    "MAX_PAYLOAD": 65536,
    # Open streams one worker process serves; more get a retry-able answer.
    "MAX_STREAMS": 20000,
    # Long-polls one worker process keeps waiting; more get a 503.
    "MAX_POLLS": 20000,
    # Seconds after which a stream ends cleanly (with jitter) so clients
    # reconnect and spread over the workers; 0 disables.
    "MAX_STREAM_AGE": 3600.0,
    # Events queued for one slow client; on overflow they coalesce per topic.
    "QUEUE_SIZE": 256,
    # Seconds a stream may stay blocked on a client that does not read.
    "WRITE_TIMEOUT": 30.0,
    # Reconnect delay hinted to EventSource (`retry:`), in milliseconds; the
    # value sent carries up to +50% jitter.
    "RETRY_MS": 2000,
    # Dotted path to `(request, topic) -> bool`, sync or async.
    "AUTHORIZE": "events.authorization.default_authorize",
    # Seconds a signed subscribe token stays valid.
    "TOKEN_MAX_AGE": 3600.0,
    # Thresholds of Python's cyclic garbage collector in a worker serving
    # events (gc.set_threshold), or None to leave them alone. See asgi.py.
    "GC_THRESHOLD": (50_000, 20, 100),
    # Serve Prometheus metrics at events/metrics/. Off by default: they tell
    # anyone who can reach the site about its traffic; restrict them (nginx).
    "METRICS": False,
    # Middleware for the stream and poll endpoints only, or None to use
    # settings.MIDDLEWARE. Async-only middleware; see events/handlers.py.
    "MIDDLEWARE": None,
}


def _get(name: str) -> Any:
    configured = getattr(settings, "EVENTS", None) or {}
    return configured.get(name, DEFAULTS[name])


class Settings:
    """Typed, lazy view of ``settings.EVENTS`` with the defaults filled in."""

    @property
    def REDIS_URL(self) -> str:
        return str(_get("REDIS_URL"))

    @property
    def PREFIX(self) -> str:
        return str(_get("PREFIX"))

    @property
    def HEARTBEAT(self) -> float:
        return float(_get("HEARTBEAT"))

    @property
    def LONGPOLL_TIMEOUT(self) -> float:
        return float(_get("LONGPOLL_TIMEOUT"))

    @property
    def HISTORY(self) -> int:
        return int(_get("HISTORY"))

    @property
    def MAX_TOPICS(self) -> int:
        return int(_get("MAX_TOPICS"))

    @property
    def MAX_TOPIC_LENGTH(self) -> int:
        return int(_get("MAX_TOPIC_LENGTH"))

    @property
    def MAX_PAYLOAD(self) -> int:
        return int(_get("MAX_PAYLOAD"))

    @property
    def MAX_STREAMS(self) -> int:
        return int(_get("MAX_STREAMS"))

    @property
    def MAX_POLLS(self) -> int:
        return int(_get("MAX_POLLS"))

    @property
    def MAX_STREAM_AGE(self) -> float:
        return float(_get("MAX_STREAM_AGE") or 0)

    @property
    def QUEUE_SIZE(self) -> int:
        return int(_get("QUEUE_SIZE"))

    @property
    def WRITE_TIMEOUT(self) -> float:
        return float(_get("WRITE_TIMEOUT"))

    @property
    def RETRY_MS(self) -> int:
        return int(_get("RETRY_MS"))

    @property
    def AUTHORIZE(self) -> str:
        return str(_get("AUTHORIZE"))

    @property
    def TOKEN_MAX_AGE(self) -> float:
        return float(_get("TOKEN_MAX_AGE"))

    @property
    def GC_THRESHOLD(self) -> tuple[int, ...] | None:
        value = _get("GC_THRESHOLD")
        return None if value is None else tuple(int(part) for part in value)

    @property
    def METRICS(self) -> bool:
        return bool(_get("METRICS"))

    @property
    def MIDDLEWARE(self) -> list[str] | None:
        value = _get("MIDDLEWARE")
        return None if value is None else list(value)


conf = Settings()
