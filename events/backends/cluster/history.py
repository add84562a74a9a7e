"""History in cluster mode: one bounded stream per slot group, read per group.

The single-node read script (``events/history.py``) runs unchanged on each
group's stream, in the same bounded batches: it touches one key, so it runs
on the node owning the group's slot. A resume reads the first batch of every
group of the client's topics (in parallel) and judges each group's position
on its own, exactly as the single-node rules judge one id (known -> replay;
older than the retained history -> ``history-expired``; anything else ->
``unknown-id``). Any group in reset means the client re-fetches everything:
it gets one ``reset``, whose composite id is the current position of all its
groups.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio
from redis.asyncio.cluster import RedisCluster

from ...core.ids import ZERO_ID, ZERO_KEY, EventKey, format_key, parse_id
from ...core.messages import skip_malformed
from ..history import BATCH, BATCH_BYTES, READ, decode
from .connection import get_sync_cluster, run_command
from .layout import group_of, history_key, newest_key
from .messages import GroupMessage
from .positions import Positions


@dataclass
class GroupBatch:
    """One bounded read of a group's history after a position: events (maybe none) or why not."""

    group: int
    # The newest id the group's stream ever had, when read.
    last_key: EventKey
    # Read up to here; more entries follow it when ``more``.
    position: EventKey = ZERO_KEY
    more: bool = False
    events: list[GroupMessage] = field(default_factory=list)
    reset_reason: str | None = None


def groups_of(topics: Iterable[str]) -> dict[int, list[str]]:
    groups: dict[int, list[str]] = {}
    for topic in topics:
        groups.setdefault(group_of(topic), []).append(topic)
    return groups


def _read(group: int, args: list[str | int]) -> Callable[[RedisCluster], Awaitable[Any]]:
    return lambda client: READ.arun(client, [history_key(group), newest_key(group)], args)


async def _run_read(group: int, args: list[str | int], node: redis.asyncio.Redis | None) -> Any:
    """The read script on ``group``'s stream: through the cluster client, or on ``node`` (the hub reader's)."""
    if node is None:
        return await run_command(_read(group, args))
    return await READ.arun(node, [history_key(group), newest_key(group)], args)


def _messages(group: int, entries: list[tuple[bytes, list[bytes]]]) -> list[GroupMessage]:
    messages = []
    for id, fields in entries:
        try:
            message = GroupMessage.from_history(id, fields)
        except (ValueError, TypeError) as exc:
            skip_malformed(f"history entry {decode(id)} of group {group}", exc)
            continue
        assert isinstance(message, GroupMessage)
        message.group = group
        messages.append(message)
    return messages


async def read_group(
    group: int, since: EventKey | None, topics: list[str], limit: int = BATCH, node: redis.asyncio.Redis | None = None
) -> GroupBatch:
    """The events on ``topics`` among the next ``limit`` entries of a group after ``since``, or a reset reason.

    ``since`` None: the client named no position in this group (unknown).
    Continue from ``batch.position`` while ``batch.more``. ``node``: read
    there (the node the hub reader is on) rather than through the cluster client.
    """
    if since is None:
        raw_last, *_ = await _run_read(group, ["$", 0, 0], node)
        return GroupBatch(group, parse_id(raw_last), reset_reason="unknown-id")
    since_id = format_key(since)
    raw_last, raw_first, trimmed, known, raw_position, more, entries = await _run_read(
        group, [since_id, limit, BATCH_BYTES, *topics], node
    )
    last_key = parse_id(raw_last)
    if known or (since_id == ZERO_ID and not trimmed):
        events = _messages(group, entries)
        return GroupBatch(group, last_key, parse_id(raw_position), bool(more), events)
    first_id = decode(raw_first)
    if trimmed and (since_id == ZERO_ID or (first_id and since < parse_id(first_id))):
        return GroupBatch(group, last_key, reset_reason="history-expired")
    return GroupBatch(group, last_key, reset_reason="unknown-id")


async def read_first_batches(positions: Positions | None, topics: Iterable[str]) -> list[GroupBatch]:
    """The first batch of every group of ``topics``, read in parallel (a group missing from ``positions`` is unknown)."""
    groups = groups_of(topics)
    return list(
        await asyncio.gather(
            *(
                read_group(group, None if positions is None else positions.get(group), wanted)
                for group, wanted in sorted(groups.items())
            )
        )
    )


async def current_positions(groups: Iterable[int]) -> Positions:
    """The newest id of each group's stream (``0-0`` before its first event): one pipeline, every shard in parallel."""
    wanted = sorted(set(groups))

    async def read(client: RedisCluster) -> list[Any]:
        pipe = client.pipeline()
        for group in wanted:
            pipe.xrevrange(history_key(group), "+", "-", count=1)
        return await pipe.execute()

    return newest_of(wanted, await run_command(read))


def current_positions_sync(groups: Iterable[int]) -> Positions:
    """:func:`current_positions` for synchronous callers (``current_id``, the template tag)."""
    wanted = sorted(set(groups))
    pipe = get_sync_cluster().pipeline()  # type: ignore[no-untyped-call]
    for group in wanted:
        pipe.xrevrange(history_key(group), "+", "-", count=1)
    return newest_of(wanted, pipe.execute())


def newest_of(groups: list[int], replies: list[Any]) -> Positions:
    """Positions from one ``XREVRANGE key + - COUNT 1`` reply per group (the newest entry, or none)."""
    return {
        group: parse_id(decode(reply[0][0])) if reply else ZERO_KEY
        for group, reply in zip(groups, replies, strict=True)
    }
