"""HTTP views: the SSE stream, the long-poll, health and metrics. Kept thin.

Each view validates the request and authorizes the topics before any Redis
work; the streaming and waiting live in ``streaming.py`` and ``polling.py``.
Errors are JSON: ``{"error": "<message for people>", "code": "<stable code>"}``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any

from django.core.exceptions import DisallowedHost, SuspiciousOperation, TooManyFieldsSent
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..authorization import denied_topics
from ..backends.active import get_backend, get_hub
from ..backends.errors import REDIS_ERRORS
from ..conf import conf
from ..core.revocations import Access
from ..revocation import access_of
from ..serving.handlers import thread_lean, warn_unless_events_handler
from ..tokens import InvalidToken, read_token
from . import params
from .errors import error
from .polling import ANSWER_HEADERS, POLL_REFUSALS, LongPollResponse, open_poll, poll_refused
from .streaming import EventStreamResponse

logger = logging.getLogger(__name__)

View = Callable[[HttpRequest], Coroutine[Any, Any, HttpResponseBase]]
# A view of a subscription (stream or poll): given the request's topics, resume id and who opens it.
SubscriptionView = Callable[[HttpRequest, frozenset[str], str | None, Access], Coroutine[Any, Any, HttpResponseBase]]


def get_only(view: View) -> View:
    """Answer any method but GET with a JSON 405 (Django's own 405 has no body)."""

    @wraps(view)
    async def wrapper(request: HttpRequest) -> HttpResponseBase:
        if request.method != "GET":
            response = error(405, "method_not_allowed", f"Method {request.method} is not allowed here; use GET.")
            response["Allow"] = "GET"
            return response
        try:
            return await view(request)
        except DisallowedHost:
            return error(400, "disallowed_host", "The Host header is not one this site serves (ALLOWED_HOSTS).")
        except TooManyFieldsSent:
            return error(400, "too_many_fields", "The query has too many parameters.")
        except SuspiciousOperation:
            return error(400, "bad_request", "Malformed request.")

    # Read-only endpoints: a POST must get the JSON 405 above, not the CSRF
    # middleware's HTML 403. Nothing here changes state.
    return csrf_exempt(wrapper)


async def _topics_allowed(request: HttpRequest, topics: frozenset[str]) -> HttpResponseBase | float | None:
    """Parse the token and ask the hook; a 403 (saying nothing about the topics) if denied.

    Allowed: the Unix time at which the token used expires, or None (no token).
    """
    token = params.parse_token(request)
    granted: frozenset[str] = frozenset()
    expires: float | None = None
    if token is not None:
        try:
            granted, expires = read_token(token)
        except InvalidToken as exc:
            return error(403, "invalid_token", str(exc))
    if await denied_topics(request, topics - granted):
        return error(403, "forbidden", "You are not allowed to read one or more of the requested topics.")
    # A token that grants none of the topics asked for is no limit on them.
    return expires if granted & topics else None


def subscription(read_id: Callable[[HttpRequest], str | None]) -> Callable[[SubscriptionView], View]:
    """Make ``view(request, topics, resume_id)`` a view that gets them only from a valid, authorized request.

    ``read_id`` reads the resume id (``Last-Event-ID`` or ``since``); a bad
    request or a refused topic is answered with its JSON error instead.
    """

    def decorate(view: SubscriptionView) -> View:
        @wraps(view)
        async def wrapper(request: HttpRequest) -> HttpResponseBase:
            warn_unless_events_handler(request)
            # Validate Host against ALLOWED_HOSTS even when EVENTS["MIDDLEWARE"] left
            # out the middleware that usually does (DisallowedHost becomes a 400).
            params.check_host(request)
            # Revocations received from now on apply to this request (revocations.py).
            checked_at = asyncio.get_running_loop().time()
            try:
                topics = params.parse_topics(request)
                resume_id = read_id(request)
                allowed = await _topics_allowed(request, topics)
            except params.BadRequest as exc:
                return error(exc.status, exc.code, exc.message)
            if isinstance(allowed, HttpResponseBase):
                return allowed
            access = await access_of(request, token_expires=allowed, checked_at=checked_at)
            return await view(request, topics, resume_id, access)

        return wrapper

    return decorate


@thread_lean
@get_only
@subscription(params.parse_last_event_id)
async def stream(
    request: HttpRequest, topics: frozenset[str], last_event_id: str | None, access: Access
) -> HttpResponseBase:
    try:
        announce = params.parse_flag(request, "open_event")
    except params.BadRequest as exc:
        return error(exc.status, exc.code, exc.message)
    return EventStreamResponse(topics, last_event_id, access, announce=announce)


@thread_lean
@get_only
@subscription(params.parse_since)
async def poll(request: HttpRequest, topics: frozenset[str], since: str | None, access: Access) -> HttpResponseBase:
    try:
        poll = await open_poll(topics, since, access)
    except POLL_REFUSALS as exc:
        return poll_refused(exc)
    if isinstance(poll, bytes):
        # Events were there already: the answer is known now.
        return HttpResponse(poll, headers=dict(ANSWER_HEADERS))
    # Nothing yet: the view returns, and the answer is sent when it comes.
    return LongPollResponse(poll)


# An anonymous stream or poll on public topics may be served without these
# views, by the events handler itself (serving/public.py): the same answer,
# less CPU.
stream.events_public = "stream"  # type: ignore[attr-defined]
poll.events_public = "poll"  # type: ignore[attr-defined]


@get_only
async def health(request: HttpRequest) -> HttpResponse:
    """For load balancers: 200 when Redis answers and the hub is connected (or idle)."""
    hub = get_hub()
    try:
        redis_ok = await get_backend().ping()
    except REDIS_ERRORS:
        redis_ok = False
    hub_state = "connected" if hub.connected else ("disconnected" if hub.started else "idle")
    healthy = redis_ok and hub_state != "disconnected" and not hub.closing
    body = {
        "status": "ok" if healthy else "unavailable",
        "redis": redis_ok,
        "hub": hub_state,
        "shutting_down": hub.closing,
        "streams": len(hub.streams),
        "polls": len(hub.polls),
    }
    response = JsonResponse(body, status=200 if healthy else 503)
    response["Cache-Control"] = "no-store"
    return response


@get_only
async def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics of this worker process: a 404 unless ``EVENTS["METRICS"]`` is on."""
    if not conf.METRICS:
        raise Http404("Metrics are off; set EVENTS['METRICS'] = True to serve them.")
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
