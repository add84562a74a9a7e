"""Messages in cluster mode: each knows its slot group; each client sees its own composite id.

A :class:`GroupMessage` is what the hub builds once per event (from a shard
message or a history entry), like a single-node :class:`Message` plus the
group whose stream gave it its id. The ``id:`` a client must see is its
composite position *after* that event, which differs between clients with
different topics, so each client gets a thin :class:`PositionedMessage`: the
composite id in front of the shared, once-encoded rest of the frame.
"""

from __future__ import annotations

from functools import cached_property

from ...core.messages import Message
from .positions import format_positions


class GroupMessage(Message):
    __slots__ = ("group",)
    group: int

    @classmethod
    def in_group(cls, message: Message, group: int) -> GroupMessage:
        grouped = cls(message.id, message.topic, message.event, message.data_json)
        grouped.group = group
        return grouped

    def reset_scope(self) -> object:
        return self.group

    def as_reset(self, reason: str) -> Message:
        return GroupMessage.in_group(Message.reset(self.id, reason), self.group)

    @cached_property
    def solo(self) -> PositionedMessage:
        """The message as every client whose topics are all in this group sees it (built once)."""
        return PositionedMessage(self, format_positions({self.group: self.key}))

    @cached_property
    def frame_tail(self) -> bytes:
        """The frame without its ``id:`` line (``event:`` and ``data:`` lines, blank line)."""
        head = b"id: " + self.id.encode() + b"\n"
        return self.frame[len(head) :]


class PositionedMessage(Message):
    """One client's view of a :class:`GroupMessage`: same event, the client's composite id."""

    __slots__ = ("source",)

    def __init__(self, source: GroupMessage, composite_id: str) -> None:
        self.source = source
        self.id = composite_id
        self.key = source.key
        self.topic = source.topic
        self.event = source.event
        self.data_json = source.data_json
        self.is_reset = source.is_reset

    @cached_property
    def frame(self) -> bytes:
        # Cached: a shared PositionedMessage (``GroupMessage.solo``) is written
        # to many clients, as one bytes object like a single-node frame.
        return b"id: " + self.id.encode() + b"\n" + self.source.frame_tail
