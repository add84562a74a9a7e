"""System checks on settings.EVENTS: each mistake has its stable id and says what is wrong."""

import pytest
from django.conf import settings
from django.core.checks import CheckMessage, Tags, run_checks
from django.test import override_settings

from events.checks import check_settings


def ids(messages: list[CheckMessage]) -> list[str | None]:
    return [message.id for message in messages]


def test_defaults_pass() -> None:
    with override_settings(EVENTS={}):
        assert check_settings() == []


@pytest.mark.parametrize(
    ("events", "expected_id", "text"),
    [
        ([], "events.E001", "must be a dict"),
        ({"HEARTBAET": 1}, "events.E002", "unknown key 'HEARTBAET'"),
        ({"HEARTBEAT": "15"}, "events.E003", "EVENTS['HEARTBEAT'] is '15'"),
        ({"HISTORY": 0}, "events.E003", "expected an integer >= 1"),
        ({"MAX_TOPICS": 2.5}, "events.E003", "MAX_TOPICS"),
        ({"PREFIX": ""}, "events.E004", "PREFIX"),
        ({"REDIS_URL": "localhost:6379"}, "events.E005", "redis://"),
        ({"AUTHORIZE": "no.such.module.hook"}, "events.E006", "cannot be imported"),
        ({"QUEUE_SIZE": 4, "MAX_TOPICS": 8}, "events.E007", "QUEUE_SIZE"),
        ({"HEARTBEAT": 60}, "events.W001", "60"),
        ({"MIDDLEWARE": "events.middleware.SessionUserMiddleware"}, "events.E008", "expected None or a list"),
        ({"MIDDLEWARE": ["no.such.Middleware"]}, "events.E008", "cannot be imported"),
        ({"MIDDLEWARE": ["tests.hooks.sync_only_middleware"]}, "events.E008", "not async-capable"),
        ({"GC_THRESHOLD": "high"}, "events.E009", "gc.set_threshold"),
        ({"GC_THRESHOLD": (1, 2, 3, 4)}, "events.E009", "gc.set_threshold"),
        ({"METRICS": "yes"}, "events.E010", "expected True or False"),
        ({"MIDDLEWARE": ["django.middleware.security.SecurityMiddleware"]}, "events.W003", "worker thread"),
    ],
)
def test_each_mistake_is_reported_with_its_id(events: object, expected_id: str, text: str) -> None:
    with override_settings(EVENTS=events):
        messages = check_settings()
    assert expected_id in ids(messages)
    assert any(text in message.msg for message in messages)


def test_gzip_middleware_is_not_warned_about() -> None:
    """It leaves event streams alone (tests/test_compression.py), so W002 is retired."""
    with override_settings(
        MIDDLEWARE=[*settings.MIDDLEWARE, "django.middleware.gzip.GZipMiddleware"],
        EVENTS={**settings.EVENTS, "MIDDLEWARE": None},
    ):
        messages = run_checks(tags=[Tags.compatibility])
    assert [message for message in messages if message.id and message.id.startswith("events.")] == []


@pytest.mark.parametrize(
    ("key", "fallbacks", "debug", "reported"),
    [
        ("dev-only-insecure-secret-key-change-me", [], False, True),  # the demo's (project/settings.py)
        ("django-insecure-abc123", [], False, True),  # startproject's
        ("a-long-random-production-key-0123456789abcdef", ["dev-only-insecure-secret-key-change-me"], False, True),
        ("a-long-random-production-key-0123456789abcdef", [], False, False),
        ("dev-only-insecure-secret-key-change-me", [], True, False),  # development: fine
    ],
)
def test_a_public_development_secret_key_without_debug_is_an_error(
    key: str, fallbacks: list[str], debug: bool, reported: bool
) -> None:
    with override_settings(SECRET_KEY=key, SECRET_KEY_FALLBACKS=fallbacks, DEBUG=debug):
        messages = run_checks(tags=[Tags.security])
    assert ("events.E011" in ids(messages)) is reported


def test_the_demo_development_key_is_the_one_checked() -> None:
    from pathlib import Path

    from events.checks import PUBLIC_SECRET_KEYS

    source = (Path(__file__).resolve().parent.parent / "project" / "settings.py").read_text()
    assert all(f'"{key}"' in source for key in PUBLIC_SECRET_KEYS)
