"""A client in cluster mode: one position per slot group, a composite id on every event.

Same queue, overflow policy and wake-ups as the single-node
:class:`~events.core.subscriber.Subscriber`; what differs is what "already given"
means. A message is fresh when it is newer than the client's position in the
message's group (ids of different groups are not comparable), and each
message taken out is re-labelled with the client's composite position after
it, so whatever id the client last saw is exactly where it resumes.
"""

from __future__ import annotations

from ...core.messages import Message
from ...core.subscriber import Subscriber
from .messages import GroupMessage, PositionedMessage
from .positions import Positions, format_positions


class ClusterSubscriber(Subscriber):
    __slots__ = ("positions",)

    def __init__(self, topics: frozenset[str], queue_size: int, *, is_stream: bool) -> None:
        super().__init__(topics, queue_size, is_stream=is_stream)
        # Group -> newest event id given; set by the backend's replay before any take().
        self.positions: Positions = {}

    @property
    def position_id(self) -> str:
        return format_positions(self.positions)

    def _advance(self, message: Message) -> Message | None:
        assert isinstance(message, GroupMessage)
        positions = self.positions
        current = positions.get(message.group)
        # A reset always passes and restarts the group's count (the shard
        # may have lost data; its new ids may be lower).
        if message.is_reset or current is None or message.key > current:
            positions[message.group] = message.key
            if len(positions) == 1:
                # All its topics in one group: the id is the message's own,
                # and the frame is shared with every such client.
                return message.solo
            return PositionedMessage(message, format_positions(positions))
        return None

    def _coalesce(self) -> None:
        latest: dict[str | None, Message] = {message.topic: message for message in self.pending}
        if self.fits(latest.values()):
            super()._coalesce()
            return
        # A reset for everything: the client is moved to the newest position
        # of every group it had pending events in, then told to re-fetch.
        from ... import metrics

        metrics.CLIENTS_COALESCED.inc()
        for message in self.pending:
            assert isinstance(message, GroupMessage)
            current = self.positions.get(message.group)
            if current is None or message.key > current:
                self.positions[message.group] = message.key
        newest = self.pending[-1]
        assert isinstance(newest, GroupMessage)
        self.pending = [GroupMessage.in_group(Message.reset(newest.id, "overflow"), newest.group)]
