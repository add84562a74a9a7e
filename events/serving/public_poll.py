"""The long-poll of a visitor on public topics: served without a Django request, under uvicorn.

A long-poll is asked again the moment it is answered, so its cost per answer
is the cost of a whole request: for thousands of polls, most of a worker's
CPU. Most of that is what Django builds around a view (the ``HttpRequest``,
the middleware chain, the response object), which an anonymous poll on public
topics never reads: the default authorization hook allows a public topic to
anyone without looking at the request, ``SessionUserMiddleware`` only adds a
session and a user, and a visitor without a session has no user and nothing
to revoke. Such a poll is served here, by the same functions the view uses
(``params.py``, ``polling.py``), answering exactly as the view would.

Only when every part of that holds, checked from the scope before anything
is done (anything else goes the usual way, which also answers every bad
request with its 4xx):

- the server is uvicorn (httptools), where this path was measured;
- ``EVENTS["AUTHORIZE"]`` is the default hook and ``EVENTS["MIDDLEWARE"]``
  is ``[SessionUserMiddleware]`` or empty: no site code runs for the request;
- a ``GET`` without a body, with a ``Host`` header ``ALLOWED_HOSTS`` allows
  and no ``X-Forwarded-Host``; no session cookie;
- valid ``topic`` and ``since`` parameters, no ``token``, no ``user:`` topic.

Django's ``request_started`` and ``request_finished`` are sent as for any
request served by ``handlers.py`` (their trips skipped when they would do
nothing there, ``sync_trips.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings
from django.core.exceptions import TooManyFieldsSent
from django.http.cookie import parse_cookie
from django.http.response import HttpResponseBase

from .. import metrics
from ..authorization import USER_TOPIC_PREFIX
from ..conf import conf
from ..core.revocations import Access
from ..http import params
from ..http.polling import POLL_REFUSALS, open_poll, poll_refused
from .asgi_types import Scope, Send

DEFAULT_AUTHORIZE = "events.authorization.default_authorize"
# EVENTS["MIDDLEWARE"] values under which no site code sees an anonymous request.
SESSION_ONLY_MIDDLEWARE: tuple[list[str], ...] = (["events.middleware.SessionUserMiddleware"], [])

# Request headers that send a request the usual way (a body, or a host Django finds elsewhere).
USUAL_WAY_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"x-forwarded-host"})

ANSWER_HEADERS = [(b"Content-Type", b"application/json"), (b"Cache-Control", b"no-store")]


def public_poll(scope: Scope) -> tuple[frozenset[str], str | None] | None:
    """The topics and ``since`` of an anonymous long-poll on public topics, or None: serve it the usual way."""
    if (
        scope["method"] != "GET"
        or conf.AUTHORIZE != DEFAULT_AUTHORIZE
        or conf.MIDDLEWARE not in SESSION_ONLY_MIDDLEWARE
    ):
        return None
    host = None
    for name, value in scope["headers"]:
        if name == b"host":
            if host is not None:
                return None
            host = value
        elif name == b"cookie":
            if settings.SESSION_COOKIE_NAME in parse_cookie(value.decode("latin-1")):
                return None
        elif name in USUAL_WAY_HEADERS:
            return None
    if host is None or not params.host_allowed(host.decode("latin-1")):
        return None
    try:
        query = params.parse_query(scope.get("query_string", b"").decode())
        if "token" in query:
            return None
        topics = params.topics_of(query.get("topic", []))
        since = params.since_of(query.get("since", []))
    except (params.BadRequest, TooManyFieldsSent, UnicodeDecodeError):
        return None
    if any(topic.startswith(USER_TOPIC_PREFIX) for topic in topics):
        return None
    return topics, since


async def answer_public_poll(topics: frozenset[str], since: str | None, send: Send) -> HttpResponseBase | None:
    """Open the poll and send its answer; None when sent, else the error response to send the usual way."""
    metrics.POLLS_DIRECT.inc()
    access = Access(checked_at=asyncio.get_running_loop().time())
    try:
        poll = await open_poll(topics, since, access)
    except POLL_REFUSALS as exc:
        return poll_refused(exc)
    body = poll if isinstance(poll, bytes) else await poll.answer()  # answer() detaches the poll
    headers: list[Any] = [*ANSWER_HEADERS, (b"Content-Length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
    return None
