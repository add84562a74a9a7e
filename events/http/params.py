"""Reading a request's parameters: topics, ids, token. Errors become JSON 4xx.

Everything here runs before any Redis work, so bad input never reaches Redis
and never costs a long-lived slot.
"""

from __future__ import annotations

from django.http import HttpRequest

from ..backends.active import get_backend
from ..conf import conf
from .topics import validate_topic

# Longest signed token we accept, in characters.
MAX_TOKEN_LENGTH = 4096


class BadRequest(Exception):
    """The request is malformed; ``code`` is stable, ``message`` is for people."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _single(request: HttpRequest, name: str) -> str | None:
    values = request.GET.getlist(name)
    if len(values) > 1:
        raise BadRequest("repeated_parameter", f"Parameter {name!r} was given {len(values)} times; give it once.")
    return values[0] if values else None


def parse_topics(request: HttpRequest) -> frozenset[str]:
    topics = request.GET.getlist("topic")
    if not topics:
        raise BadRequest("missing_topic", "Give at least one topic, e.g. ?topic=status.")
    limit = conf.MAX_TOPICS
    if len(topics) > limit:
        raise BadRequest("too_many_topics", f"{len(topics)} topics requested; the limit is {limit} per request.")
    for topic in topics:
        try:
            validate_topic(topic)
        except ValueError as exc:
            raise BadRequest("invalid_topic", str(exc)) from None
    return frozenset(topics)


def _check_id(name: str, value: str) -> str:
    backend = get_backend()
    limit = backend.max_id_length
    if len(value) > limit or not backend.is_valid_id(value):
        shown = value if len(value) <= 41 else value[:41] + "..."
        raise BadRequest("invalid_id", f"Malformed {name} {shown!r}: expected an event id like '1700000000000-0'.")
    return value


def parse_last_event_id(request: HttpRequest) -> str | None:
    """The ``Last-Event-ID`` header, else the ``last_event_id`` parameter; None if absent or empty."""
    # The parameter is checked even when the header wins: given twice it is
    # a 400 whatever else the request carries.
    value = _single(request, "last_event_id")
    # META, not request.headers: that would build a mapping of every header.
    header = request.META.get("HTTP_LAST_EVENT_ID")
    if header is not None and header.strip():
        return _check_id("Last-Event-ID", header.strip())
    return _check_id("last_event_id", value) if value else None


def parse_since(request: HttpRequest) -> str | None:
    value = _single(request, "since")
    return _check_id("since", value) if value else None


def parse_token(request: HttpRequest) -> str | None:
    value = _single(request, "token")
    if value is not None and len(value) > MAX_TOKEN_LENGTH:
        raise BadRequest("invalid_token", f"Token is {len(value)} characters long; the limit is {MAX_TOKEN_LENGTH}.")
    return value or None


def parse_flag(request: HttpRequest, name: str) -> bool:
    """A boolean parameter: absent, ``0`` or ``false`` is off; ``1`` or ``true`` is on."""
    value = _single(request, name)
    if value is None or value.lower() in ("", "0", "false"):
        return False
    if value.lower() in ("1", "true"):
        return True
    raise BadRequest("invalid_parameter", f"Parameter {name!r} must be 1 or 0, got {value[:20]!r}.")
