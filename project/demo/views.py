"""The demo's pages: the live board, its JSON views, changing a tracker, joining and leaving.

The board page renders the current state *and* the id of the newest event at
that moment, read before the database: the page's client resumes from that
id, so a change committed between rendering and subscribing is replayed, never
lost. Forms work without JavaScript (POST, then redirect back to the board);
the page's script submits them with ``fetch`` and waits for the invalidation.
"""

from __future__ import annotations

import logging
import secrets

import redis
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model, login, logout
from django.contrib.staticfiles.views import serve as serve_static
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_POST

from events import acurrent_id
from events.authorization import user_topic

from .board import BOARD_TOPIC, board_state, change_tracker, private_state
from .models import Tracker

logger = logging.getLogger(__name__)

MAX_NAME_LENGTH = 30


async def _newest_event_id(topics: list[str]) -> str | None:
    """The id to resume from, or None (subscribe from "now") when Redis does not answer."""
    try:
        # The topics matter on a Redis Cluster only (a position per slot group).
        return await acurrent_id(topics)
    except redis.RedisError as exc:
        logger.warning("demo: cannot read the newest event id: %s", exc)
        return None


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


def _wants_json(request: HttpRequest) -> bool:
    return request.get_preferred_type(["text/html", "application/json"]) == "application/json"


@require_GET
async def board(request: HttpRequest) -> HttpResponse:
    user = await request.auser()
    topics = [BOARD_TOPIC]
    if user.is_authenticated:
        topics.append(user_topic(user))
    last_event_id = await _newest_event_id(topics)  # before reading the board: see the module doc
    state, private = await sync_to_async(lambda: (board_state(), private_state(user)))()
    # The page's own URLs; the {% live_events %} tag renders the subscribe config.
    config = {"boardUrl": reverse("demo:board-data"), "privateUrl": reverse("demo:private-data")}
    context = {
        "board": state,
        "private": private,
        "config": config,
        "topics": topics,
        "last_event_id": last_event_id,
    }
    return _no_store(render(request, "demo/board.html", context))


@require_GET
def board_data(request: HttpRequest) -> HttpResponse:
    return _no_store(JsonResponse(board_state()))


@require_GET
def board_fragment(request: HttpRequest) -> HttpResponse:
    """The trackers as an HTML fragment, for pages that re-fetch with htmx on ``live:board``."""
    return _no_store(render(request, "demo/board_fragment.html", {"board": board_state()}))


@require_GET
def private_data(request: HttpRequest) -> HttpResponse:
    return _no_store(JsonResponse(private_state(request.user)))


@require_POST
def change(request: HttpRequest, slug: str) -> HttpResponse:
    delta = request.POST.get("delta")
    if delta not in {"1", "-1"}:
        return JsonResponse({"error": "delta must be 1 or -1.", "code": "invalid_delta"}, status=400)
    try:
        result = change_tracker(slug, int(delta), request.user)
    except Tracker.DoesNotExist:
        return JsonResponse({"error": f"No tracker {slug!r}.", "code": "not_found"}, status=404)
    if _wants_json(request):
        return JsonResponse({"tracker": slug, "value": result.value}, status=200)
    return redirect("demo:board")


@require_POST
def join(request: HttpRequest) -> HttpResponse:
    """Sign in as a new, password-less demo user named by the visitor."""
    name = " ".join(request.POST.get("name", "").split())[:MAX_NAME_LENGTH]
    if name:
        username = f"{slugify(name)[:20] or 'visitor'}-{secrets.token_hex(3)}"
        user = get_user_model().objects.create_user(username=username, first_name=name)
        login(request, user)
    return redirect("demo:board")


@require_POST
def leave(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("demo:board")


def static_file(request: HttpRequest, path: str) -> HttpResponseBase:
    """Development only (``make run``, no nginx): an app's static file, as a plain response.

    Django's ``serve`` answers with a ``FileResponse``, which streams a
    synchronous file iterator; Django's ASGI handler then warns on every
    request ("StreamingHttpResponse must consume synchronous iterators...").
    The demo's files are small: read them whole instead.
    """
    response = serve_static(request, path)
    if not response.streaming:
        return response  # e.g. 304 Not Modified
    try:
        plain = HttpResponse(b"".join(response), status=response.status_code)
    finally:
        response.close()
    for header, value in response.items():
        plain[header] = value
    return plain


def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico on pages without a <link rel="icon"> (the JSON views)."""
    return redirect(static("demo/favicon.svg"), permanent=True)
