"""The app's settings: one Django setting, ``EVENTS``, a dict; every key optional.

Each key is declared once, in :class:`Settings` below: its default, its type
(the descriptor class), its environment variable and a one-line meaning. That
one declaration is the source of

- the typed access: ``conf.HEARTBEAT`` is a ``float``, read when used (not at
  import time), so ``override_settings(EVENTS={...})`` works in tests;
- the system checks (``checks.py`` asks each declaration what is wrong with a
  value; a string where a number belongs is an error, never a silent cast);
- the environment reading (:func:`from_environ`, used by ``project/settings.py``);
- the settings table in ``docs/reference/settings.md`` (``tests/test_settings.py``
  keeps them equal).

To add a setting, add one line to :class:`Settings` (and the table row the
test prints for you).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Generic, TypeVar, overload

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

T = TypeVar("T")
SettingT = TypeVar("SettingT", bound="Setting[Any]")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def configured() -> Mapping[str, Any]:
    """``settings.EVENTS`` as the site set it (the checks report a non-dict)."""
    value = getattr(settings, "EVENTS", None) or {}
    return value if isinstance(value, Mapping) else {}


class _Changes:
    """Counts changes of ``settings.EVENTS`` made with ``override_settings`` (Django's ``setting_changed``).

    Each setting keeps the value it read with the count it read it at, and
    reads again once the count moved. The receiver is connected at the first
    read of a setting, not at import.
    """

    def __init__(self) -> None:
        self.generation = 0
        self.watching = False

    def watch(self) -> None:
        if not self.watching:
            setting_changed.connect(self.changed, dispatch_uid="events.conf")
            self.watching = True

    def changed(self, *, setting: str, **kwargs: Any) -> None:
        if setting == "EVENTS":
            self.generation += 1


_changes = _Changes()


class Setting(Generic[T]):
    """One key of ``EVENTS``: a typed descriptor on :class:`Settings`.

    Subclasses say which values are valid (:meth:`problem`), how a valid value
    becomes the typed one (:meth:`convert`) and how an environment variable
    is parsed (:meth:`parse`).
    """

    #: System check id reported for a value of the wrong type or range.
    check_id = "events.E003"
    name = ""

    def __init__(self, default: T, meaning: str, *, env: str | None = None) -> None:
        self.default = default
        self.meaning = meaning
        self.env = env
        # (the settings generation it was read in, its value), see __get__.
        self._cached: tuple[int, T] | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self: SettingT, obj: None, owner: type | None = None) -> SettingT: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...
    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:
            return self
        # Read, checked and converted once, not at every use: a stream's
        # set-up reads a dozen settings, and each read of Django's lazy
        # settings object costs more than the rest of the lookup. Read again
        # after ``override_settings`` changes EVENTS (Django's
        # ``setting_changed`` signal, see ``_Changes``).
        generation = _changes.generation
        cached = self._cached
        if cached is not None and cached[0] == generation:
            return cached[1]
        _changes.watch()
        value = self.value(configured())
        self._cached = (generation, value)
        return value

    def value(self, config: Mapping[str, Any]) -> T:
        """The typed value of this key in ``config`` (an ``EVENTS`` dict), or its default."""
        raw = config.get(self.name, self.default)
        problem = self.problem(raw, ranges=False)
        if problem is not None:
            # The system check says the same at start-up; this catches a value
            # of the wrong type set later (override_settings) instead of
            # converting it. Ranges are left to the check.
            raise ImproperlyConfigured(self.describe(raw, problem))
        return self.convert(raw)

    def describe(self, raw: object, problem: str) -> str:
        return f"EVENTS[{self.name!r}] is {raw!r}; expected {problem}."

    def problem(self, raw: object, *, ranges: bool = True) -> str | None:
        """What a valid value looks like, if ``raw`` is not one (of the right type, in range); else None."""
        raise NotImplementedError

    def convert(self, raw: Any) -> T:
        return raw  # type: ignore[no-any-return]

    def parse(self, text: str) -> T:
        """The value of an environment variable; ValueError(what is expected) if it does not parse."""
        raise NotImplementedError


class Int(Setting[int]):
    def __init__(self, default: int, meaning: str, *, minimum: int, env: str | None = None) -> None:
        super().__init__(default, meaning, env=env)
        self.minimum = minimum

    def problem(self, raw: object, *, ranges: bool = True) -> str | None:
        if isinstance(raw, bool) or not isinstance(raw, int) or (ranges and raw < self.minimum):
            return f"an integer >= {self.minimum}"
        return None

    def parse(self, text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise ValueError("an integer") from None


class Float(Setting[float]):
    def __init__(self, default: float, meaning: str, *, minimum: float, env: str | None = None) -> None:
        super().__init__(default, meaning, env=env)
        self.minimum = minimum

    def problem(self, raw: object, *, ranges: bool = True) -> str | None:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or (ranges and raw < self.minimum):
            return f"a number >= {self.minimum}"
        return None

    def convert(self, raw: Any) -> float:
        return float(raw)

    def parse(self, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise ValueError("a number") from None


class Text(Setting[str]):
    check_id = "events.E004"

    def problem(self, raw: object, *, ranges: bool = True) -> str | None:
        return None if isinstance(raw, str) and raw else "a non-empty string"

    def parse(self, text: str) -> str:
        return text


class Flag(Setting[bool]):
    check_id = "events.E010"

    def problem(self, raw: object, *, ranges: bool = True) -> str | None:
        return None if isinstance(raw, bool) else "True or False"

    def parse(self, text: str) -> bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError("1, true, yes or on; or 0, false, no or off")


class Thresholds(Setting[tuple[int, ...] | None]):
    check_id = "events.E009"

    def problem(self, raw: object, *, ranges: bool = True) -> str | None:
        if raw is None or (
            isinstance(raw, (list, tuple))
            and 1 <= len(raw) <= 3
            and all(isinstance(part, int) and not isinstance(part, bool) and part >= 0 for part in raw)
        ):
            return None
        return "None or up to three integers for gc.set_threshold()"

    def convert(self, raw: Any) -> tuple[int, ...] | None:
        return None if raw is None else tuple(raw)


class DottedPaths(Setting[list[str] | None]):
    check_id = "events.E008"

    def problem(self, raw: object, *, ranges: bool = True) -> str | None:
        if raw is None or (isinstance(raw, (list, tuple)) and all(isinstance(path, str) for path in raw)):
            return None
        return "None or a list of dotted paths"

    def convert(self, raw: Any) -> list[str] | None:
        return None if raw is None else list(raw)


class Settings:
    """Every key of ``EVENTS``, declared once; ``conf.KEY`` is its typed value."""

    REDIS_URL = Text(
        "redis://127.0.0.1:6379/0",
        "Redis to use: single server, unix socket, TLS, Sentinel or Redis Cluster (see [Redis URL](#redis-url))",
        env="REDIS_URL",
    )
    PREFIX = Text("events", "key and channel prefix", env="EVENTS_PREFIX")
    HEARTBEAT = Float(15.0, "seconds between heartbeat comments", minimum=0.01, env="EVENTS_HEARTBEAT")
    LONGPOLL_TIMEOUT = Float(25.0, "seconds a long-poll waits", minimum=0.01, env="EVENTS_LONGPOLL_TIMEOUT")
    HISTORY = Int(10000, "events kept for replay (`MAXLEN ~`, at least this many)", minimum=1, env="EVENTS_HISTORY")
    MAX_TOPICS = Int(16, "topics per request", minimum=1, env="EVENTS_MAX_TOPICS")
    MAX_STREAMS = Int(20000, "open streams per worker process", minimum=1, env="EVENTS_MAX_STREAMS")
    MAX_POLLS = Int(20000, "waiting long-polls per worker process", minimum=1, env="EVENTS_MAX_POLLS")
    MAX_STREAM_AGE = Float(
        3600.0,
        "seconds before a stream ends cleanly (85 to 100 %, jittered); `0` = never",
        minimum=0,
        env="EVENTS_MAX_STREAM_AGE",
    )
    QUEUE_SIZE = Int(256, "events queued for one slow client before they coalesce", minimum=1, env="EVENTS_QUEUE_SIZE")
    WRITE_TIMEOUT = Float(
        30.0,
        "seconds a stream may stay blocked on a client that does not read",
        minimum=0.01,
        env="EVENTS_WRITE_TIMEOUT",
    )
    DRAIN_RATE = Int(
        1000,
        "streams a stopping worker ends per second (`0` = all at once); see Shutdown",
        minimum=0,
        env="EVENTS_DRAIN_RATE",
    )
    RETRY_MS = Int(2000, "`retry:` hint in ms; up to +50 % jitter is added", minimum=0, env="EVENTS_RETRY_MS")
    AUTHORIZE = Text(
        "events.authorization.default_authorize",
        "dotted path to `(request, topic) -> bool`, sync or async",
        env="EVENTS_AUTHORIZE",
    )
    TOKEN_MAX_AGE = Float(3600.0, "seconds a subscribe token stays valid", minimum=1, env="EVENTS_TOKEN_MAX_AGE")
    MAX_TOPIC_LENGTH = Int(128, "longest topic name, in characters", minimum=1)
    MAX_PAYLOAD = Int(65536, "largest JSON payload of one event, in bytes", minimum=2)
    GC_THRESHOLD = Thresholds(
        (50_000, 20, 100),
        "`gc.set_threshold()` of a worker serving events; `None` = leave Python's (see Performance)",
    )
    METRICS = Flag(
        False, "serve Prometheus metrics at `events/metrics/`; off, that URL is a `404`", env="EVENTS_METRICS"
    )
    MIDDLEWARE = DottedPaths(
        None,
        "middleware for the stream and poll endpoints only; `None` = `settings.MIDDLEWARE` (see Threads)",
    )


def declarations() -> list[Setting[Any]]:
    """Every declared setting, in declaration order."""
    return [value for value in vars(Settings).values() if isinstance(value, Setting)]


def from_environ(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """An ``EVENTS`` dict of the settings whose environment variable is set (and not empty).

    For a 12-factor ``settings.py``: ``EVENTS = events.conf.from_environ()``.
    Unset keys are left out, so their defaults apply. A value that does not
    parse raises ``ImproperlyConfigured`` naming the variable; ranges are
    left to the system checks, as for values set in ``settings.py``.
    """
    environ = os.environ if environ is None else environ
    result: dict[str, Any] = {}
    for setting in declarations():
        text = environ.get(setting.env) if setting.env else None
        if not text:
            continue
        try:
            result[setting.name] = setting.parse(text)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{setting.env}={text!r}: expected {exc}.") from None
    return result


conf = Settings()
