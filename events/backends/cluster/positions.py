"""Composite event ids: where a client is, per slot group, in cluster mode.

In a cluster each slot group has its own history stream, with ids made by
whichever node owns the group's slot, from that node's clock. Ids of different
groups cannot be compared, so a client's position is one id per group of its
topics. The ``Last-Event-ID`` (and the long-poll's ``since`` and ``last_id``,
and every event's ``id``) is that set of positions, written compactly:

    c<B>.<gg><d>[-<s>].<gg><d>[-<s>]...

- ``c`` marks a composite id (a single-node id starts with a digit);
- ``B`` is the largest millisecond part of the positions, in hexadecimal;
- one entry per group, groups ascending: ``gg`` the group number (two hex
  digits), ``d`` = ``B`` minus the position's millisecond part (hex), and
  ``-<s>`` the sequence part in hex when it is not 0.

So group 5 at ``1795823576898-0`` and group 70 at ``1795823570000-2`` is
``c1a21f6d2742.050.461af2-2``. Recent positions have small deltas: 16 topics
take about 110 to 130 characters. Hex digits are lower-case; the encoding is
canonical (one spelling per position set) and anything else is malformed.
(Hex rather than a denser base because Python formats it natively: every
event a client receives is labelled with its composite id.)
"""

from __future__ import annotations

import re

from ...core.ids import EventKey
from .layout import GROUPS

Positions = dict[int, EventKey]

_MAX_U64 = 2**64 - 1
# Longest composite id: every group, each entry at most 1 + 2 + 16 + 1 + 16.
MAX_LENGTH = 1 + 16 + GROUPS * 36
_ENTRY_RE = re.compile(r"([0-9a-f]{2})(0|[1-9a-f][0-9a-f]{0,15})(?:-([1-9a-f][0-9a-f]{0,15}))?")
_BASE_RE = re.compile(r"c(0|[1-9a-f][0-9a-f]{0,15})")


def format_positions(positions: Positions) -> str:
    """The composite id of ``positions`` (at least one group)."""
    base = max(ms for ms, _ in positions.values())
    parts = [f"c{base:x}"]
    for group in sorted(positions):
        ms, seq = positions[group]
        parts.append(f"{group:02x}{base - ms:x}-{seq:x}" if seq else f"{group:02x}{base - ms:x}")
    return ".".join(parts)


def parse_positions(value: str) -> Positions:
    """The positions of a composite id; ValueError if it is not one, exactly as written."""
    if len(value) > MAX_LENGTH:
        raise ValueError(f"Composite event id is {len(value)} characters; the limit is {MAX_LENGTH}.")
    head, *entries = value.split(".")
    base_match = _BASE_RE.fullmatch(head)
    if base_match is None or not entries:
        raise ValueError(f"Malformed composite event id {value[:60]!r}.")
    base = int(base_match[1], 16)
    positions: Positions = {}
    previous = -1
    for entry in entries:
        match = _ENTRY_RE.fullmatch(entry)
        if match is None:
            raise ValueError(f"Malformed composite event id {value[:60]!r}.")
        group, delta, seq = int(match[1], 16), int(match[2], 16), int(match[3] or "0", 16)
        if group >= GROUPS or group <= previous or delta > base or seq > _MAX_U64 or base > _MAX_U64:
            raise ValueError(f"Malformed composite event id {value[:60]!r}.")
        previous = group
        positions[group] = (base - delta, seq)
    if all(ms != base for ms, _ in positions.values()):
        raise ValueError(f"Malformed composite event id {value[:60]!r}: no entry at its base.")
    return positions


def is_composite(value: str) -> bool:
    try:
        parse_positions(value)
    except ValueError:
        return False
    return True
