"""Helpers for the Redis Cluster tests: topics placed on chosen shards, shard channel counts."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable

from events.backends.cluster.layout import channel_name, group_of, group_slot

from .servers import ClusterNode, RedisClusterServers


def topics_per_shard(cluster: RedisClusterServers, per_shard: int = 1) -> dict[int, list[str]]:
    """``per_shard`` fresh topics on each primary (by port), each in its own slot group."""
    wanted: dict[int, list[str]] = {node.port: [] for node in cluster.primaries()}
    ranges = cluster.slots()
    groups: set[int] = set()
    for n in itertools.count():
        topic = f"c{n}-{uuid.uuid4().hex[:6]}"
        group = group_of(topic)
        slot = group_slot(group)
        port = next(p for start, end, p in ranges if start <= slot <= end)
        if len(wanted[port]) < per_shard and group not in groups:
            wanted[port].append(topic)
            groups.add(group)
        if all(len(topics) == per_shard for topics in wanted.values()):
            return wanted
    raise AssertionError("unreachable")


def shard_subscribers(cluster: RedisClusterServers, topic: str, prefix: str) -> int:
    """Subscribers of ``topic``'s shard channel on the primary that owns it."""
    node = cluster.owner(group_slot(group_of(topic)))
    with node.client() as client:
        _, count = client.execute_command("PUBSUB", "SHARDNUMSUB", channel_name(topic, prefix))
        return int(count)


def pubsub_connections(node: ClusterNode, name_filter: Callable[[dict[str, str]], bool] = lambda c: True) -> int:
    """Connections on ``node`` currently subscribed to shard channels."""
    with node.client() as client:
        clients = client.client_list()
    return sum(1 for c in clients if int(c.get("ssub", 0)) > 0 and name_filter(c))
