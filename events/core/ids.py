"""Event ids: the entry ids of the Redis history stream, ``<ms>-<seq>``.

Ids compare as ``(ms, seq)`` integer pairs, which is their order in the
stream. ``0-0`` means "before the first event".
"""

from __future__ import annotations

import re

EventKey = tuple[int, int]

ZERO_ID = "0-0"
ZERO_KEY: EventKey = (0, 0)
# Redis ids are two unsigned 64-bit integers: at most 20 digits each.
_ID_RE = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_MAX_U64 = 2**64 - 1
# The largest id Redis can hold: nothing can ever follow it.
MAX_ID = f"{_MAX_U64}-{_MAX_U64}"


def is_valid_id(value: str) -> bool:
    if not _ID_RE.fullmatch(value):
        return False
    ms, seq = value.split("-")
    return int(ms) <= _MAX_U64 and int(seq) <= _MAX_U64


def parse_id(value: str | bytes) -> EventKey:
    """Turn ``"1700000000000-3"`` into ``(1700000000000, 3)``; ValueError if malformed."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not is_valid_id(value):
        raise ValueError(f"Malformed event id {value!r}: expected '<milliseconds>-<sequence>', e.g. '1700000000000-0'.")
    ms, seq = value.split("-")
    return int(ms), int(seq)


def format_key(key: EventKey) -> str:
    return f"{key[0]}-{key[1]}"
