"""The one declaration per setting (events/conf.py) drives access, checks, environment and the docs."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from events.checks import check_settings
from events.conf import Flag, Setting, Settings, conf, declarations, from_environ
from tests.servers import ROOT

SETTINGS_PAGE = ROOT / "docs" / "reference" / "settings.md"
CHECKS_PAGE = ROOT / "docs" / "reference" / "checks.md"
TABLE_HEADER = "| key | env var | default | meaning |"


def _markdown_default(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def expected_table() -> str:
    rows = [TABLE_HEADER, "|---|---|---|---|"]
    for setting in declarations():
        env = f"`{setting.env}`" if setting.env else "\N{EN DASH}"
        rows.append(f"| `{setting.name}` | {env} | {_markdown_default(setting.default)} | {setting.meaning} |")
    return "\n".join(rows)


def documented_table() -> str:
    text = SETTINGS_PAGE.read_text()
    start = text.index(TABLE_HEADER)
    end = text.index("\n\n", start)
    return text[start:end]


def test_the_settings_table_is_the_declarations() -> None:
    assert documented_table() == expected_table(), (
        "docs/reference/settings.md's table differs from events/conf.py; paste this one:\n" + expected_table()
    )


def test_the_checks_page_lists_every_check_id() -> None:
    source = "".join(path.read_text() for path in (ROOT / "events").glob("*.py"))
    ids = set(re.findall(r"events\.([EW]\d{3})", source))
    assert {"E001", "E008", "E009", "W001", "W003"} <= ids
    text = CHECKS_PAGE.read_text()
    missing = sorted(check_id for check_id in ids if f"`events.{check_id}`" not in text)
    assert missing == [], f"check ids missing from docs/reference/checks.md: {missing}"


def test_every_setting_is_declared_with_a_meaning() -> None:
    names = [setting.name for setting in declarations()]
    assert len(names) == len(set(names))
    assert all(setting.meaning and "|" not in setting.meaning for setting in declarations())
    # The defaults pass their own checks.
    assert all(setting.problem(setting.default) is None for setting in declarations())


def test_typed_access_converts_only_what_is_valid() -> None:
    with override_settings(EVENTS={"HEARTBEAT": 3, "GC_THRESHOLD": [1, 2]}):
        assert conf.HEARTBEAT == 3.0
        assert isinstance(conf.HEARTBEAT, float)
        assert conf.GC_THRESHOLD == (1, 2)
        assert Settings.MAX_TOPICS.default == conf.MAX_TOPICS
    with override_settings(EVENTS={"HEARTBEAT": "3"}), pytest.raises(ImproperlyConfigured, match="'HEARTBEAT'"):
        _ = conf.HEARTBEAT


def test_a_value_read_once_follows_every_override_and_its_end() -> None:
    # Values are cached per EVENTS dict (conf.py): each override is a new one.
    with override_settings(EVENTS={"HEARTBEAT": 3}):
        assert conf.HEARTBEAT == 3.0
        with override_settings(EVENTS={"HEARTBEAT": 4}):
            assert conf.HEARTBEAT == 4.0
        assert conf.HEARTBEAT == 3.0
    with override_settings(EVENTS={}):
        assert Settings.HEARTBEAT.default == conf.HEARTBEAT
    with override_settings(EVENTS={"HEARTBEAT": 5}):
        assert conf.HEARTBEAT == 5.0


@pytest.mark.parametrize(
    ("events", "expected_id"),
    [
        ({"HEARTBEAT": "15"}, "events.E003"),
        ({"MAX_STREAMS": "100"}, "events.E003"),
        ({"HISTORY": True}, "events.E003"),
        ({"PREFIX": 7}, "events.E004"),
    ],
)
def test_a_string_or_bool_where_a_number_belongs_is_an_error(events: dict[str, Any], expected_id: str) -> None:
    with override_settings(EVENTS=events):
        assert [message.id for message in check_settings()] == [expected_id]


def test_from_environ_reads_each_declared_variable() -> None:
    environ = {
        "REDIS_URL": "redis://example:6379/1",
        "EVENTS_PREFIX": "site",
        "EVENTS_HEARTBEAT": "2.5",
        "EVENTS_MAX_STREAMS": "100",
        "EVENTS_RETRY_MS": "",  # empty: the default applies
        "UNRELATED": "x",
    }
    assert from_environ(environ) == {
        "REDIS_URL": "redis://example:6379/1",
        "PREFIX": "site",
        "HEARTBEAT": 2.5,
        "MAX_STREAMS": 100,
    }
    with override_settings(EVENTS=from_environ(environ)):
        assert check_settings() == []


@pytest.mark.parametrize(("variable", "value"), [("EVENTS_MAX_STREAMS", "many"), ("EVENTS_HISTORY", "10.5")])
def test_from_environ_names_a_variable_that_does_not_parse(variable: str, value: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=f"{variable}='{value}': expected an integer"):
        from_environ({variable: value})


def test_environment_variable_names_are_kept() -> None:
    """Deployments set these; renaming one silently drops a setting."""
    assert {setting.name: setting.env for setting in declarations() if setting.env} == {
        "REDIS_URL": "REDIS_URL",
        "PREFIX": "EVENTS_PREFIX",
        "HEARTBEAT": "EVENTS_HEARTBEAT",
        "LONGPOLL_TIMEOUT": "EVENTS_LONGPOLL_TIMEOUT",
        "HISTORY": "EVENTS_HISTORY",
        "MAX_TOPICS": "EVENTS_MAX_TOPICS",
        "MAX_STREAMS": "EVENTS_MAX_STREAMS",
        "MAX_POLLS": "EVENTS_MAX_POLLS",
        "MAX_STREAM_AGE": "EVENTS_MAX_STREAM_AGE",
        "QUEUE_SIZE": "EVENTS_QUEUE_SIZE",
        "WRITE_TIMEOUT": "EVENTS_WRITE_TIMEOUT",
        "DRAIN_RATE": "EVENTS_DRAIN_RATE",
        "RETRY_MS": "EVENTS_RETRY_MS",
        "AUTHORIZE": "EVENTS_AUTHORIZE",
        "TOKEN_MAX_AGE": "EVENTS_TOKEN_MAX_AGE",
        "METRICS": "EVENTS_METRICS",
    }


def test_a_declaration_is_a_typed_descriptor() -> None:
    assert isinstance(Settings.HEARTBEAT, Setting)
    assert Settings.HEARTBEAT.name == "HEARTBEAT"


def test_a_flag_setting_reads_the_usual_spellings_and_refuses_others() -> None:
    flag = Flag(False, "a switch", env="EVENTS_SWITCH")
    assert [flag.parse(text) for text in ("1", "on", "TRUE", "0", "off", "No")] == [True, True, True] + [False] * 3
    with pytest.raises(ValueError, match="1, true, yes or on"):
        flag.parse("maybe")
    assert flag.problem(True) is None
    assert flag.problem("true") == "True or False"
