"""Error responses of the event endpoints: always JSON, ``{"error": "<for people>", "code": "<stable>"}``.

The views answer bad input with :func:`error` themselves. What Django answers
on its own before or around a view (a disallowed ``Host`` refused by a
middleware, an unhandled exception's 500) is HTML by default; the events
ASGI handler passes those through :func:`as_json` so a client of these
endpoints only ever parses JSON.
"""

from __future__ import annotations

from http import HTTPStatus

from django.http import JsonResponse
from django.http.response import HttpResponseBase

# Seconds a client should wait before retrying a request answered with 503.
RETRY_AFTER = 2


def error(status: int, code: str, message: str) -> JsonResponse:
    response = JsonResponse({"error": message, "code": code}, status=status)
    response["Cache-Control"] = "no-store"
    return response


def unavailable(message: str) -> JsonResponse:
    """A 503 that tells the client to retry after ``RETRY_AFTER`` seconds."""
    response = error(503, "unavailable", message)
    response["Retry-After"] = str(RETRY_AFTER)
    return response


def as_json(response: HttpResponseBase) -> HttpResponseBase:
    """``response`` if it is not an error or is JSON already, else the same status as a JSON error."""
    if response.status_code < 400 or response.get("Content-Type", "").startswith("application/json"):
        return response
    try:
        phrase = HTTPStatus(response.status_code).phrase
    except ValueError:
        phrase = "Error"
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    replacement = error(response.status_code, code, f"{phrase}.")
    for header in ("Allow", "Retry-After"):
        if header in response:
            replacement[header] = response[header]
    response.close()
    return replacement
