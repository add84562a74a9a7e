"""One event as the app passes it around, and its two wire forms.

A :class:`Message` is built once per event per process (by the hub, from a
pub/sub message, or from a history entry) and its SSE frame is encoded once;
every client on the topic gets the same bytes object.

The ``data:`` of a frame and a long-poll event object share the members
``topic`` and ``data`` so a client handles both transports with one function.
"""

from __future__ import annotations

import json
import logging
import time
from functools import cached_property

from ..http.topics import validate_event_name
from . import sse
from .ids import EventKey, parse_id

logger = logging.getLogger(__name__)

RESET_EVENT = "reset"
# At most one log line per this many seconds about foreign data skipped.
SKIPPED_LOG_INTERVAL = 10.0
_skipped = {"count": 0, "logged_at": float("-inf")}


def skip_malformed(source: str, exc: Exception) -> None:
    """Note data in Redis that is not ours (it is skipped): logged, at most once per interval.

    Anything with write access to Redis can put foreign data on our channels
    or in the history; one such message must neither stop the hub nor fail a
    replay, and a flood of them must not flood the log.
    """
    _skipped["count"] += 1
    now = time.monotonic()
    if now - _skipped["logged_at"] >= SKIPPED_LOG_INTERVAL:
        logger.warning(
            "events: skipped %d malformed message(s) from Redis; latest from %s: %s",
            _skipped["count"],
            source,
            exc,
        )
        _skipped["count"] = 0
        _skipped["logged_at"] = now


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
        """Parse a pub/sub message body ``<id>\\n<event>\\n<json>`` (see connection.py).

        ValueError if it is not one (foreign data): see :meth:`checked`.
        """
        parts = payload.decode().split("\n", 2)
        if len(parts) != 3:
            raise ValueError(f"not '<id>\\n<event>\\n<json>': {payload[:80]!r}")
        return cls.checked(parts[0], topic, parts[1], parts[2])

    @classmethod
    def from_history(cls, id: bytes | str, fields: list[bytes]) -> Message:
        """Parse a history entry: id and its flat field list ``t, topic, e, event, d, json``.

        ValueError if it is not one (foreign data): see :meth:`checked`.
        """
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        try:
            topic, event, data = values[b"t"], values[b"e"], values[b"d"]
        except KeyError:
            raise ValueError(f"history entry {id!r} lacks the fields t, e and d") from None
        return cls.checked(id.decode() if isinstance(id, bytes) else id, topic.decode(), event.decode(), data.decode())

    @classmethod
    def checked(cls, id: str, topic: str, event: str, data_json: str) -> Message:
        """A message from data read from Redis, after checking what a client would choke on.

        The id must be an event id, the event name one a publisher may use
        (it becomes an SSE ``event:`` line), the payload valid JSON (it is
        embedded in the frame as is). Checked once per event per process.
        """
        validate_event_name(event)
        json.loads(data_json)
        return cls(id, topic, event, data_json)

    @classmethod
    def reset(cls, id: str, reason: str) -> Message:
        """The ``reset`` event: "re-fetch everything", resuming from ``id``."""
        return cls(id, None, RESET_EVENT, json.dumps({"reason": reason}))

    def reset_scope(self) -> object:
        """What one reset standing for this message and others covers (see :meth:`as_reset`): all."""
        return None

    def as_reset(self, reason: str) -> Message:
        """A reset at this message's position: "re-fetch everything up to here" (the hub's overflow)."""
        return Message.reset(self.id, reason)

    @cached_property
    def frame(self) -> bytes:
        """The SSE frame, encoded once."""
        topic_json = "null" if self.topic is None else json.dumps(self.topic)
        body = f'{{"topic": {topic_json}, "data": {self.data_json}}}'
        return sse.encode_event(body, id=self.id, event=self.event)

    @cached_property
    def chunk(self) -> bytes:
        """The frame as one HTTP/1.1 chunk (framing included), encoded once for every client of the topic."""
        return http_chunk(self.frame)

    @cached_property
    def poll_json(self) -> str:
        """The long-poll form, ``{"id", "topic", "event", "data"}`` as JSON, encoded once (the payload as published)."""
        head = f'{{"id": {json.dumps(self.id)}, "topic": {json.dumps(self.topic)}, "event": {json.dumps(self.event)}'
        return f'{head}, "data": {self.data_json}}}'

    def __repr__(self) -> str:
        return f"<Message {self.id} {self.event} on {self.topic!r}>"


def http_chunk(body: bytes) -> bytes:
    """``body`` framed as one HTTP/1.1 chunk, byte for byte what uvicorn's ``send`` writes for it."""
    return b"%x\r\n%b\r\n" % (len(body), body)
