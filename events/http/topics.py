"""Names: what a topic and an event name may look like.

Topics end up inside Redis channel names and JSON, and event names inside SSE
``event:`` lines, so both are restricted to a safe alphabet: letters, digits
and ``_ . : @ -``, starting with a letter, digit or underscore. This keeps
them single-line, printable and unable to reach keys outside the prefix.
"""

from __future__ import annotations

import re

from ..conf import conf

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@-]*")
MAX_EVENT_NAME_LENGTH = 64
# Event names the server itself sends; publishing them would confuse clients.
RESERVED_EVENT_NAMES = frozenset({"reset"})


def validate_topic(topic: object) -> str:
    """Return ``topic`` if it is a valid topic name, else raise ValueError saying why."""
    if not isinstance(topic, str):
        raise ValueError(f"Topic must be a string, got {type(topic).__name__}.")
    if not topic:
        raise ValueError("Topic must not be empty.")
    limit = conf.MAX_TOPIC_LENGTH
    if len(topic) > limit:
        raise ValueError(f"Topic {topic[:40]!r}... is {len(topic)} characters long; the limit is {limit}.")
    if not _NAME_RE.fullmatch(topic):
        raise ValueError(
            f"Invalid topic {topic!r}: use letters, digits and '_ . : @ -', starting with a letter, digit or '_'."
        )
    return topic


def validate_event_name(event: object) -> str:
    """Return ``event`` if it is a valid event name, else raise ValueError saying why."""
    if not isinstance(event, str) or not event:
        raise ValueError(f"Event name must be a non-empty string, got {event!r}.")
    if len(event) > MAX_EVENT_NAME_LENGTH or not _NAME_RE.fullmatch(event):
        raise ValueError(
            f"Invalid event name {event!r}: use up to {MAX_EVENT_NAME_LENGTH} letters, digits and '_ . : @ -'."
        )
    if event in RESERVED_EVENT_NAMES:
        raise ValueError(f"Event name {event!r} is reserved for the server.")
    return event
