"""Composite event ids and the slot-group layout of cluster mode, byte for byte (no Redis needed)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from events.backends.cluster.layout import (
    GROUPS,
    SLOTS,
    channel_name,
    group_of,
    group_slot,
    group_tags,
    history_key,
    topic_of,
)
from events.backends.cluster.positions import MAX_LENGTH, format_positions, is_composite, parse_positions

U64 = 2**64 - 1


def test_documented_example() -> None:
    positions = {5: (1795823576898, 0), 70: (1795823570000, 2)}
    assert format_positions(positions) == "c1a21f6d2742.050.461af2-2"
    assert parse_positions("c1a21f6d2742.050.461af2-2") == positions


@pytest.mark.parametrize(
    ("positions", "expected"),
    [
        ({0: (0, 0)}, "c0.000"),
        ({0: (1, 0)}, "c1.000"),
        ({127: (36, 35)}, "c24.7f0-23"),
        ({1: (1700000000000, 0), 2: (1700000000000, 1)}, "c18bcfe56800.010.020-1"),
        ({0: (U64, U64)}, "cffffffffffffffff.000-ffffffffffffffff"),
    ],
)
def test_exact_spelling(positions: dict[int, tuple[int, int]], expected: str) -> None:
    assert format_positions(positions) == expected
    assert parse_positions(expected) == positions


def test_sixteen_recent_topics_make_a_short_id() -> None:
    rng = random.Random(7)
    now = 1795823576898
    groups = rng.sample(range(GROUPS), 16)
    # Positions spread over the last minute: the id stays near 120 characters.
    positions = {g: (now - rng.randint(0, 60_000), rng.choice([0, 0, 0, 1])) for g in groups}
    assert len(format_positions(positions)) <= 130


@given(
    st.dictionaries(
        st.integers(0, GROUPS - 1),
        st.tuples(st.integers(0, U64), st.integers(0, U64)),
        min_size=1,
        max_size=GROUPS,
    )
)
def test_round_trip_is_exact_and_bounded(positions: dict[int, tuple[int, int]]) -> None:
    text = format_positions(positions)
    assert parse_positions(text) == positions
    assert len(text) <= MAX_LENGTH
    assert text.isascii() and "\n" not in text and " " not in text


@pytest.mark.parametrize(
    "value",
    [
        "",
        "c",
        "c1",  # no entry
        "1700000000000-0",  # a single-node id is not composite
        "C1.000",  # upper case
        "c1.0A0",
        "c01.000",  # leading zero in the base
        "c1.0000",  # leading zero in a delta
        "c1.000-0",  # a zero sequence is left out
        "c1.000-01",
        "c1.010.000",  # groups out of order
        "c1.000.000",  # a group twice
        "c1.800",  # group 128 does not exist
        "c1.0g0",  # not hex
        "c1.002",  # delta larger than the base
        "c2.001",  # no entry at the base
        "c1.000.",
        "c1..000",
        "c1.0_0",
        "c1.000 ",
        "c10000000000000000.000",  # base beyond 64 bits
        "c1.000-10000000000000000",  # sequence beyond 64 bits
    ],
)
def test_malformed_composites_are_refused(value: str) -> None:
    assert not is_composite(value)
    with pytest.raises(ValueError):
        parse_positions(value)


def test_too_long_is_refused_before_parsing() -> None:
    assert not is_composite("c1" + ".000" * 2000)


def test_groups_spread_evenly_over_the_slot_space() -> None:
    tags = group_tags()
    assert len(set(tags)) == GROUPS
    width = SLOTS // GROUPS
    for group in range(GROUPS):
        assert group * width <= group_slot(group) < (group + 1) * width


def test_a_topics_channel_and_history_share_one_slot_and_keep_the_topic_readable() -> None:
    for topic in ["status", "user:42", "a.b-c@d_e", "x" * 128]:
        channel = channel_name(topic, "events")
        key = history_key(group_of(topic), "events")
        assert channel.startswith(f"events:topic:{topic}{{")
        assert key.startswith("events:history:{")
        assert key_slot(channel.encode()) == key_slot(key.encode()) == group_slot(group_of(topic))
        assert topic_of(channel.encode(), b"events:topic:") == topic
    assert channel_name("status", "events") == "events:topic:status{" + group_tags()[group_of("status")] + "}"


def test_groups_are_stable() -> None:
    """Changing the layout would orphan every history stream and composite id: it is fixed."""
    assert GROUPS == 128
    assert group_tags()[:8] == ("14", "10", "100", "18", "113", "117", "346", "342")
    assert [group_of(t) for t in ["status", "board", "user:1"]] == [28, 71, 2]


@pytest.mark.parametrize(
    ("url", "text"),
    [
        ("redis+cluster://", "a host is missing"),
        ("redis+cluster://a:1,b:x", "expected a number"),
        ("redis+cluster://a:1/3", "only database 0"),
        ("redis+cluster://a:1?ssl_ca_certs=/x", "needs a TLS URL"),
    ],
)
def test_bad_cluster_urls_fail_the_system_check(url: str, text: str) -> None:
    from django.test import override_settings

    from events.checks import check_settings

    with override_settings(EVENTS={"REDIS_URL": url}):
        messages = check_settings()
    assert [m.id for m in messages] == ["events.E005"]
    assert text in messages[0].msg


def test_cluster_urls_pass_the_system_check_and_braces_in_the_prefix_do_not() -> None:
    from django.test import override_settings

    from events.checks import check_settings

    with override_settings(EVENTS={"REDIS_URL": "rediss+cluster://u:p@a:7000,b:7001?ssl_cert_reqs=none"}):
        assert check_settings() == []
    with override_settings(EVENTS={"REDIS_URL": "redis+cluster://a:7000", "PREFIX": "ev{1}"}):
        assert [m.id for m in check_settings()] == ["events.E005"]


def test_cluster_url_parsing() -> None:
    from events.backends.redis_url import parse

    location = parse("rediss+cluster://user:p%40ss@h1:7000,[::1]:7001/0?ssl_cert_reqs=none")
    assert (location.kind, location.tls, location.addresses) == ("cluster", True, (("h1", 7000), ("::1", 7001)))
    assert (location.username, location.password) == ("user", "p@ss")
    assert location.tls_options == {"ssl_cert_reqs": "none", "ssl_check_hostname": False}
    assert location.masked_url == "rediss+cluster://user:***@h1:7000,[::1]:7001/0?ssl_cert_reqs=none"
    assert parse("redis+cluster://h").addresses == (("h", 6379),)
