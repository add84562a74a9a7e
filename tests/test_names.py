"""Topic names, event names and ids: what is accepted and how refusals read."""

import pytest
from django.test import override_settings

from events.core.ids import format_key, is_valid_id, parse_id
from events.http.topics import validate_event_name, validate_topic


@pytest.mark.parametrize("topic", ["status", "user:42", "a.b-c_d@e", "_x", "9", "x" * 128])
def test_valid_topics_are_accepted(topic: str) -> None:
    assert validate_topic(topic) == topic


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("", "empty"),
        ("x" * 129, "limit is 128"),
        ("a b", "Invalid topic"),
        ("a\nb", "Invalid topic"),
        ("-x", "Invalid topic"),
        ("*", "Invalid topic"),
        ("caf\u00e9", "Invalid topic"),
        (None, "must be a string"),
    ],
)
def test_invalid_topics_are_refused_with_the_reason(topic: str | None, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        validate_topic(topic)


def test_topic_length_limit_follows_the_setting() -> None:
    with override_settings(EVENTS={"MAX_TOPIC_LENGTH": 4}), pytest.raises(ValueError, match="limit is 4"):
        validate_topic("abcde")


@pytest.mark.parametrize("name", ["", "a b", "a\nb", "x" * 65, "reset", None])
def test_invalid_event_names_are_refused(name: str | None) -> None:
    with pytest.raises(ValueError, match=r"[Ee]vent name"):
        validate_event_name(name)


@pytest.mark.parametrize(("value", "key"), [("0-0", (0, 0)), ("1795823576898-12", (1795823576898, 12))])
def test_ids_parse_and_format_round_trip(value: str, key: tuple[int, int]) -> None:
    assert parse_id(value) == key
    assert format_key(key) == value


@pytest.mark.parametrize(
    "value", ["", "1", "1-", "-1", "a-1", "1-1-1", " 1-1", "1-1\n", "1" * 21 + "-0", "18446744073709551616-0"]
)
def test_malformed_ids_are_refused(value: str) -> None:
    assert not is_valid_id(value)
    with pytest.raises(ValueError, match="Malformed event id"):
        parse_id(value)


def test_ids_order_numerically_not_as_text() -> None:
    assert parse_id("9-0") < parse_id("10-0") < parse_id("10-1")
