"""Reading a request's parameters: topics, ids, token. Errors become JSON 4xx.

Everything here runs before any Redis work, so bad input never reaches Redis
and never costs a long-lived slot.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import unquote

from django.conf import settings
from django.core.exceptions import TooManyFieldsSent
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest
from django.http.request import split_domain_port, validate_host

from ..backends.active import get_backend
from ..conf import conf
from .topics import validate_topic

# Longest signed token we accept, in characters.
MAX_TOKEN_LENGTH = 4096

# Where ``_values`` keeps a request's parsed query (in the request's __dict__).
_PARSED_QUERY = "_events_query"


class BadRequest(Exception):
    """The request is malformed; ``code`` is stable, ``message`` is for people."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _values(request: HttpRequest, name: str) -> list[str]:
    """``request.GET.getlist(name)``, without making ``request.GET`` if nobody has.

    Django's ``QueryDict`` costs about a tenth of a long-poll's CPU; the
    event endpoints read four names from it. The query is parsed as
    ``ASGIRequest.GET`` parses it, once per request. A ``GET`` already made
    (a middleware read or replaced it) is used as it is, and so is any
    request other than an ``ASGIRequest`` (WSGI decodes its query its own way).
    """
    made = request.__dict__.get("GET")
    if made is not None or not isinstance(request, ASGIRequest):
        return request.GET.getlist(name)
    parsed: dict[str, list[str]] | None = request.__dict__.get(_PARSED_QUERY)
    if parsed is None:
        parsed = request.__dict__[_PARSED_QUERY] = parse_query(request.META.get("QUERY_STRING", ""))
    return parsed.get(name, [])


def parse_query(query: str) -> dict[str, list[str]]:
    """What ``QueryDict(query)`` holds, as a plain dict of lists.

    ``parse_qsl(query, keep_blank_values=True)`` with Django's encoding and
    field limit, unquoting only the pieces that need it (most need none).
    """
    limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    if limit is not None and query.count("&") + 1 > limit:
        raise TooManyFieldsSent("The number of GET/POST parameters exceeded settings.DATA_UPLOAD_MAX_NUMBER_FIELDS.")
    encoding = settings.DEFAULT_CHARSET
    parsed: dict[str, list[str]] = {}
    for piece in query.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        if "%" in piece or "+" in piece:
            name = unquote(name.replace("+", " "), encoding)
            value = unquote(value.replace("+", " "), encoding)
        values = parsed.get(name)
        if values is None:
            parsed[name] = [value]
        else:
            values.append(value)
    return parsed


def check_host(request: HttpRequest) -> None:
    """Raise ``DisallowedHost`` unless ``request.get_host()`` is allowed (``ALLOWED_HOSTS``).

    Every request asks this about the same few ``Host`` headers, so the
    answer for a plain ``Host`` header (no ``X-Forwarded-Host``) is kept per
    header and settings; anything else asks ``get_host()`` itself.
    """
    meta = request.META
    host = meta.get("HTTP_HOST")
    if host is None or "HTTP_X_FORWARDED_HOST" in meta:
        request.get_host()
        return
    if not host_allowed(host):
        request.get_host()  # raises, with Django's own message
        raise AssertionError(f"get_host() allowed {host!r}, which validate_host() refused")


def host_allowed(host: str) -> bool:
    """Whether ``get_host()`` allows a request whose only host header is ``Host: <host>``."""
    return _host_allowed(host, tuple(settings.ALLOWED_HOSTS), settings.DEBUG)


@lru_cache(maxsize=64)
def _host_allowed(host: str, allowed_hosts: tuple[str, ...], debug: bool) -> bool:
    """``HttpRequest.get_host``'s verdict on the ``Host`` header ``host``."""
    if debug and not allowed_hosts:
        allowed_hosts = (".localhost", "127.0.0.1", "[::1]")
    domain, _ = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed_hosts)


def _single(request: HttpRequest, name: str) -> str | None:
    return single(name, _values(request, name))


def single(name: str, values: list[str]) -> str | None:
    """The one value of parameter ``name`` (None if absent); a 400 if it was given more than once."""
    if len(values) > 1:
        raise BadRequest("repeated_parameter", f"Parameter {name!r} was given {len(values)} times; give it once.")
    return values[0] if values else None


def parse_topics(request: HttpRequest) -> frozenset[str]:
    return topics_of(_values(request, "topic"))


def topics_of(topics: list[str]) -> frozenset[str]:
    """The ``topic`` parameters' values, checked (a 400 if missing, too many or malformed)."""
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
    # META, not request.headers: that would build a mapping of every header.
    return last_event_id_of(_values(request, "last_event_id"), request.META.get("HTTP_LAST_EVENT_ID"))


def last_event_id_of(values: list[str], header: str | None) -> str | None:
    """The ``Last-Event-ID`` header's value, else the ``last_event_id`` parameter's, checked; None if neither."""
    # The parameter is checked even when the header wins: given twice it is
    # a 400 whatever else the request carries.
    value = single("last_event_id", values)
    if header is not None and header.strip():
        return _check_id("Last-Event-ID", header.strip())
    return _check_id("last_event_id", value) if value else None


def parse_since(request: HttpRequest) -> str | None:
    return since_of(_values(request, "since"))


def since_of(values: list[str]) -> str | None:
    """The ``since`` parameter's value, checked (None if absent or empty)."""
    value = single("since", values)
    return _check_id("since", value) if value else None


def parse_token(request: HttpRequest) -> str | None:
    value = _single(request, "token")
    if value is not None and len(value) > MAX_TOKEN_LENGTH:
        raise BadRequest("invalid_token", f"Token is {len(value)} characters long; the limit is {MAX_TOKEN_LENGTH}.")
    return value or None


def parse_flag(request: HttpRequest, name: str) -> bool:
    """A boolean parameter: absent, ``0`` or ``false`` is off; ``1`` or ``true`` is on."""
    return flag_of(name, _values(request, name))


def flag_of(name: str, values: list[str]) -> bool:
    """The boolean parameter ``name`` from its values (see :func:`parse_flag`)."""
    value = single(name, values)
    if value is None or value.lower() in ("", "0", "false"):
        return False
    if value.lower() in ("1", "true"):
        return True
    raise BadRequest("invalid_parameter", f"Parameter {name!r} must be 1 or 0, got {value[:20]!r}.")
