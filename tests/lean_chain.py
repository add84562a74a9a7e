"""Middleware and a URLconf for tests/test_handlers.py (the event endpoints' own chain)."""

import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import markcoroutinefunction
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase
from django.urls import path

from events.serving.handlers import thread_lean

GetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


class AsyncMiddleware:
    """What every middleware here shares: async only, the next step of the chain."""

    async_capable = True
    sync_capable = False

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return await self.get_response(request)


class Hooks(AsyncMiddleware):
    """Async middleware with process_view / process_exception, and a per-request urlconf on demand."""

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.headers.get("X-Urlconf") == "broken":
            request.urlconf = "tests.lean_chain"
        return await self.get_response(request)

    async def process_view(self, request: HttpRequest, view: Any, args: Any, kwargs: Any) -> HttpResponseBase | None:
        if request.headers.get("X-Stop") == "yes":
            return JsonResponse({"stopped_before": view.__name__}, status=299)
        return None

    async def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponseBase | None:
        return JsonResponse({"caught": str(exc)}, status=298)


# Weak references to the requests Remember saw, newest last.
SEEN: list[weakref.ref[HttpRequest]] = []


class Remember(AsyncMiddleware):
    """Notes a weak reference to each request (to tell when it is freed)."""

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        SEEN.append(weakref.ref(request))
        return await self.get_response(request)


class Replace(AsyncMiddleware):
    """Answers ``X-Replace: yes`` requests with its own response, dropping the view's (not closed)."""

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)
        if request.headers.get("X-Replace") == "yes":
            return JsonResponse({"replaced": type(response).__name__})
        return response


@thread_lean
async def broken(request: HttpRequest) -> HttpResponseBase:
    raise RuntimeError("broken view")


# The URLconf the middleware above switches to: the poll path leads to a view that fails.
urlpatterns = [path("events/poll/", broken)]
