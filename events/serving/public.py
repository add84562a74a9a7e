"""Anonymous streams and long-polls on public topics: served without a Django request, under uvicorn.

A long-poll is asked again the moment it is answered, and a stream's set-up
is a request too, so a request's own cost is most of a worker's CPU when
thousands of clients poll or connect. Most of that is what Django builds
around a view (the ``HttpRequest``, the middleware chain, the response
object), which an anonymous client of public topics never reads: the default
authorization hook allows a public topic to anyone without looking at the
request, ``SessionUserMiddleware`` only adds a session and a user, and a
visitor without a session has no user and nothing to revoke. Such requests
are served by ``handlers.py`` directly, with the functions the views use
(``params.py``, ``polling.py``, ``streaming.py``), answering exactly as the
views would.

Only when every part of that holds, checked from the scope before anything
is done (anything else goes the usual way, which also answers every bad
request with its 4xx):

- the server is uvicorn (httptools), where this path was measured;
- ``EVENTS["AUTHORIZE"]`` is the default hook and ``EVENTS["MIDDLEWARE"]``
  is ``[SessionUserMiddleware]`` or empty: no site code runs for the request;
- a ``GET`` without a body, with one ``Host`` header that ``ALLOWED_HOSTS``
  allows and no ``X-Forwarded-Host``; no session cookie;
- valid parameters, no ``token``, no ``user:`` topic.

Django's ``request_started`` and ``request_finished`` are sent as for any
request served by ``handlers.py`` (their trips skipped when they would do
nothing there, ``sync_trips.py``).
"""

from __future__ import annotations

import asyncio

from django.conf import settings
from django.core.exceptions import TooManyFieldsSent
from django.http.cookie import parse_cookie
from django.http.response import HttpResponseBase

from .. import metrics
from ..authorization import USER_TOPIC_PREFIX
from ..conf import conf
from ..core.revocations import Access
from ..http import params
from ..http.polling import ANSWER_HEADERS, POLL_REFUSALS, PollAnswer, open_poll, poll_refused
from ..http.streaming import DirectStream, open_direct_stream
from . import transport
from .asgi_types import Scope, Send

DEFAULT_AUTHORIZE = "events.authorization.default_authorize"
# EVENTS["MIDDLEWARE"] values under which no site code sees an anonymous request.
SESSION_ONLY_MIDDLEWARE: tuple[list[str], ...] = (["events.middleware.SessionUserMiddleware"], [])

# Request headers that send a request the usual way (a body, or a host Django finds elsewhere).
USUAL_WAY_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"x-forwarded-host"})

# The long-poll answer's headers, as the start message carries them.
START_HEADERS = tuple((name.encode(), value.encode()) for name, value in ANSWER_HEADERS)


class Public:
    """An anonymous request on public topics: its parameters (from :func:`public_request`)."""

    __slots__ = ("last_event_id", "query", "topics")

    def __init__(self, query: dict[str, list[str]], topics: frozenset[str], last_event_id: str | None) -> None:
        self.query = query
        self.topics = topics
        self.last_event_id = last_event_id  # the Last-Event-ID header


def public_request(scope: Scope) -> Public | None:
    """The parameters of an anonymous GET on public topics whose site code would not run, or None (the usual way)."""
    if (
        scope["method"] != "GET"
        or conf.AUTHORIZE != DEFAULT_AUTHORIZE
        or conf.MIDDLEWARE not in SESSION_ONLY_MIDDLEWARE
    ):
        return None
    host = last_event_id = None
    for name, value in scope["headers"]:
        if name == b"host":
            if host is not None:
                return None
            host = value
        elif name == b"cookie":
            if settings.SESSION_COOKIE_NAME in parse_cookie(value.decode("latin-1")):
                return None
        elif name == b"last-event-id":
            if last_event_id is not None:
                return None
            last_event_id = value.decode("latin-1")
        elif name in USUAL_WAY_HEADERS:
            return None
    if host is None or not params.host_allowed(host.decode("latin-1")):
        return None
    try:
        query = params.parse_query(scope.get("query_string", b"").decode())
        if "token" in query:
            return None
        topics = params.topics_of(query.get("topic", []))
    except (params.BadRequest, TooManyFieldsSent, UnicodeDecodeError):
        return None
    if any(topic.startswith(USER_TOPIC_PREFIX) for topic in topics):
        return None
    return Public(query, topics, last_event_id)


def public_poll(scope: Scope) -> tuple[frozenset[str], str | None] | None:
    """The topics and ``since`` of an anonymous long-poll on public topics, or None: serve it the usual way."""
    public = public_request(scope)
    if public is None:
        return None
    try:
        return public.topics, params.since_of(public.query.get("since", []))
    except params.BadRequest:
        return None


def public_stream(scope: Scope) -> tuple[frozenset[str], str | None, bool] | None:
    """The topics, resume id and ``open_event`` flag of an anonymous stream on public topics, or None."""
    public = public_request(scope)
    if public is None:
        return None
    query = public.query
    try:
        last_event_id = params.last_event_id_of(query.get("last_event_id", []), public.last_event_id)
        announce = params.flag_of("open_event", query.get("open_event", []))
    except params.BadRequest:
        return None
    return public.topics, last_event_id, announce


async def open_public_poll(topics: frozenset[str], since: str | None, send: Send) -> PollAnswer | HttpResponseBase:
    """Open the poll as the view does: its answer to send (or to wait for), or the view's 503."""
    metrics.POLLS_DIRECT.inc()
    access = Access(checked_at=asyncio.get_running_loop().time())
    try:
        poll = await open_poll(topics, since, access)
    except POLL_REFUSALS as exc:
        return poll_refused(exc)
    return PollAnswer({"type": "http.response.start", "status": 200, "headers": [*START_HEADERS]}, poll)


async def open_public_stream(
    topics: frozenset[str], last_event_id: str | None, announce: bool, send: Send
) -> DirectStream:
    """Open the stream as the view does, to be sent directly (under uvicorn's httptools, so it can be aborted)."""
    metrics.STREAMS_DIRECT.inc()
    access = Access(checked_at=asyncio.get_running_loop().time())
    stream = open_direct_stream(topics, last_event_id, access, announce=announce)
    stream.subscriber.abort = transport.aborter(send)
    return stream
