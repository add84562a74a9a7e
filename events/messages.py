"""One event as the app passes it around, and its two wire forms.

A :class:`Message` is built once per event per process (by the hub, from a
pub/sub message, or from a history entry) and its SSE frame is encoded once;
every client on the topic gets the same bytes object.

The ``data:`` of a frame and a long-poll event object share the members
``topic`` and ``data`` so a client handles both transports with one function.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

from . import sse
from .ids import EventKey, parse_id

RESET_EVENT = "reset"


class Message:
    __slots__ = ("__dict__", "data_json", "event", "id", "is_reset", "key", "topic")

    def __init__(self, id: str, topic: str | None, event: str, data_json: str) -> None:
        self.id = id
        self.key: EventKey = parse_id(id)
        self.topic = topic
        self.event = event
        # The payload as JSON text, exactly as published (never re-encoded).
        self.data_json = data_json
        self.is_reset = event == RESET_EVENT

    @classmethod
    def from_pubsub(cls, topic: str, payload: bytes) -> Message:
        """Parse a pub/sub message body ``<id>\\n<event>\\n<json>`` (see connection.py)."""
        id, event, data_json = payload.decode().split("\n", 2)
        return cls(id, topic, event, data_json)

    @classmethod
    def from_history(cls, id: bytes | str, fields: list[bytes]) -> Message:
        """Parse a history entry: id and its flat field list ``t, topic, e, event, d, json``."""
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        return cls(
            id.decode() if isinstance(id, bytes) else id,
            values[b"t"].decode(),
            values[b"e"].decode(),
            values[b"d"].decode(),
        )

    @classmethod
    def reset(cls, id: str, reason: str) -> Message:
        """The ``reset`` event: "re-fetch everything", resuming from ``id``."""
        return cls(id, None, RESET_EVENT, json.dumps({"reason": reason}))

    @cached_property
    def frame(self) -> bytes:
        """The SSE frame, encoded once."""
        topic_json = "null" if self.topic is None else json.dumps(self.topic)
        body = f'{{"topic": {topic_json}, "data": {self.data_json}}}'
        return sse.encode_event(body, id=self.id, event=self.event)

    def as_dict(self) -> dict[str, Any]:
        """The long-poll form: ``{"id", "topic", "event", "data"}``."""
        return {"id": self.id, "topic": self.topic, "event": self.event, "data": json.loads(self.data_json)}

    def __repr__(self) -> str:
        return f"<Message {self.id} {self.event} on {self.topic!r}>"
