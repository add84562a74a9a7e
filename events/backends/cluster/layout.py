"""Where things live in a Redis Cluster: slot groups, keys and shard channels.

Topics are spread over ``GROUPS`` slot groups (``crc32(topic) % GROUPS``).
Each group has one hash tag, so a group's history stream and the channels of
its topics hash to one slot: the publish script (``XADD`` + ``SPUBLISH``)
runs on one node, and a topic's history sits next to its channel.

Layout (``P`` is ``EVENTS["PREFIX"]``, ``{T}`` the group's hash tag):

- ``P:history:{T}`` — the group's bounded history (a Redis Stream, the same
  fields as single-node ``P:history``);
- ``P:newest:{T}`` — the newest id of each of its topics (a hash, written
  by the publish script; see ``events/backends/history.py``);
- ``P:topic:<topic>{T}`` — the shard channel of one topic (``SPUBLISH``), so
  ``PUBSUB SHARDCHANNELS 'P:topic:<topic>*'`` finds it on its shard.

Group ``k``'s tag is the first decimal number whose slot lies in the k-th
of ``GROUPS`` equal slot ranges: groups are spread evenly over any cluster
whose primaries own contiguous, equal ranges (what ``redis-cli --cluster
create`` makes), and every primary gets ``GROUPS / primaries`` of them.
The tags are computed once, on first use. Changing ``GROUPS`` changes the
layout: it is a constant, not a setting.
"""

from __future__ import annotations

import functools
import itertools
import zlib

from redis.crc import key_slot

from ...conf import conf

GROUPS = 128
SLOTS = 16384


@functools.cache
def group_tags() -> tuple[str, ...]:
    """The hash tag of each group (index = group number)."""
    width = SLOTS // GROUPS
    tags: dict[int, str] = {}
    for number in itertools.count():
        tag = str(number)
        group = key_slot(tag.encode()) // width
        tags.setdefault(group, tag)
        if len(tags) == GROUPS:
            return tuple(tags[group] for group in range(GROUPS))
    raise AssertionError("unreachable")


@functools.lru_cache(maxsize=65536)
def group_of(topic: str) -> int:
    return zlib.crc32(topic.encode()) % GROUPS


def group_slot(group: int) -> int:
    return key_slot(group_tags()[group].encode())


def history_key(group: int, prefix: str | None = None) -> str:
    return f"{conf.PREFIX if prefix is None else prefix}:history:{{{group_tags()[group]}}}"


def newest_key(group: int, prefix: str | None = None) -> str:
    """The group's per-topic newest-id index (``events/backends/history.py``), next to its history."""
    return f"{conf.PREFIX if prefix is None else prefix}:newest:{{{group_tags()[group]}}}"


def channel_name(topic: str, prefix: str | None = None) -> str:
    """The shard channel of ``topic``: ``<prefix>:topic:<topic>{<tag>}``."""
    return f"{conf.PREFIX if prefix is None else prefix}:topic:{topic}{{{group_tags()[group_of(topic)]}}}"


def topic_of(channel: bytes, prefix: bytes) -> str:
    """The topic of a shard channel name (topics never contain braces)."""
    return channel[len(prefix) : channel.rindex(b"{")].decode()
