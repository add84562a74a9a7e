"""The Redis Cluster backend (``redis+cluster://``, ``rediss+cluster://``).

Same duties as the single-node backend, on a cluster: ``publish`` runs the
script on the topic's group's shard (``XADD`` + ``SPUBLISH``), the hub keeps
the shared reader once per primary (``pubsub.py``), clients hold one
position per slot group and see composite ids (``positions.py``), and a
resume reads each group's history on its own shard (``history.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Iterable

from redis.asyncio.cluster import RedisCluster

from ...core.ids import format_key, is_valid_id
from ...core.messages import Message
from ...core.subscriber import Subscriber
from ..errors import REDIS_ERRORS
from ..history import Batch
from ..reader import HubConnection, HubSide
from . import history, publishing
from .connection import run_command
from .layout import GROUPS
from .messages import GroupMessage, PositionedMessage
from .positions import MAX_LENGTH, Positions, format_positions, is_composite, parse_positions
from .pubsub import ShardedPubSub
from .subscriber import ClusterSubscriber


class ClusterBackend:
    max_id_length = MAX_LENGTH

    def is_valid_id(self, value: str) -> bool:
        # A plain id is well-formed too: it is simply unknown here (a reset),
        # as after moving from single-node Redis to a cluster.
        return is_valid_id(value) or is_composite(value)

    def publish(self, topic: str, event: str, payload: str) -> str:
        return publishing.publish(topic, event, payload)

    async def apublish(self, topic: str, event: str, payload: str) -> str:
        return await publishing.apublish(topic, event, payload)

    def current_id(self, topics: Iterable[str] | None) -> str:
        return format_positions(history.current_positions_sync(_groups(topics)))

    async def acurrent_id(self, topics: Iterable[str] | None) -> str:
        return format_positions(await history.current_positions(_groups(topics)))

    async def start_position(self, topics: frozenset[str]) -> str | None:
        """Where a stream without ``Last-Event-ID`` starts: the current position of its groups."""
        return await self.acurrent_id(topics)

    def new_subscriber(self, topics: frozenset[str], queue_size: int, *, is_stream: bool) -> Subscriber:
        return ClusterSubscriber(topics, queue_size, is_stream=is_stream)

    async def replay(
        self, client: Subscriber, since: str | None, live: HubConnection | None = None
    ) -> AsyncGenerator[Batch, None]:
        """What ``client`` missed after ``since``, batch by batch; sets its positions as it goes.

        Without ``since``: its groups' current positions, nothing to replay.
        Each batch holds one bounded read of every group that has more (in
        parallel); a group that cannot be resumed (unknown, expired, trimmed
        between batches) ends the replay with one ``reset``.
        """
        assert isinstance(client, ClusterSubscriber)
        if since is None:
            client.positions = await history.current_positions(history.groups_of(client.topics))
            return
        positions: Positions | None = parse_positions(since) if is_composite(since) else None
        batches = await history.read_first_batches(positions, client.topics)
        if any(batch.reset_reason is not None for batch in batches):
            client.positions = {batch.group: batch.last_key for batch in batches}
            yield self._reset(client, batches)
            return
        assert positions is not None
        client.positions = {batch.group: positions[batch.group] for batch in batches}
        topics = history.groups_of(client.topics)
        while True:
            events: list[Message] = []
            for batch in batches:
                for message in batch.events:
                    client.positions[batch.group] = message.key
                    events.append(PositionedMessage(message, client.position_id))
                # Entries of other topics read past: the position moves on too.
                client.positions[batch.group] = max(client.positions[batch.group], batch.position)
            going_on = [batch for batch in batches if batch.more]
            yield Batch(client.position_id, client.position_id, bool(going_on), events=events)
            if not going_on or client.close_reason is not None:
                return
            batches = list(
                await asyncio.gather(
                    *(history.read_group(batch.group, batch.position, topics[batch.group]) for batch in going_on)
                )
            )
            lost = [batch for batch in batches if batch.reset_reason is not None]
            if lost:
                for batch in lost:
                    client.positions[batch.group] = batch.last_key
                yield self._reset(client, lost)
                return

    @staticmethod
    def _reset(client: ClusterSubscriber, batches: list[history.GroupBatch]) -> Batch:
        """A batch holding one reset, for the first group in ``batches`` that cannot be resumed."""
        first = next(batch for batch in batches if batch.reset_reason is not None)
        reset = GroupMessage.in_group(Message.reset(format_key(first.last_key), first.reset_reason or ""), first.group)
        positioned = PositionedMessage(reset, client.position_id)
        return Batch(client.position_id, client.position_id, reset=positioned)

    def poll_last_id(self, client: Subscriber, since: str, batch: Batch | None) -> str:
        assert isinstance(client, ClusterSubscriber)
        return client.position_id

    def new_pubsub(self, hub: HubSide) -> ShardedPubSub:
        return ShardedPubSub(hub)

    async def ping(self) -> bool:
        """True while any primary answers.

        A shard failing over must not make every worker fail its health check
        (a load balancer would then take them all out, although the other
        shards serve on); the topics of that shard are refused meanwhile.
        """

        async def any_primary(client: RedisCluster) -> bool:
            for node in client.get_primaries():
                try:
                    if await client.ping(target_nodes=node):
                        return True
                except REDIS_ERRORS:
                    continue
            return False

        return await run_command(any_primary)


def _groups(topics: Iterable[str] | None) -> Iterable[int]:
    """The slot groups of ``topics``; every group without topics (``current_id()`` covers everything)."""
    groups = history.groups_of(topics or ())
    return groups if groups else range(GROUPS)
