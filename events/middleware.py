"""An async-only middleware for the event endpoints: session and user, no thread.

Django's ``SessionMiddleware`` and ``AuthenticationMiddleware`` are sync
middleware: under ASGI each of their hooks is a trip to a worker thread, and
a typical middleware stack costs a dozen such trips per request, which is
most of the cost of opening a stream. The event endpoints only *read* the
session (to know the user for authorization), so for them this one async
middleware does the same set-up with no trip at all: ``request.session`` (a
lazy session store), ``request.user`` and ``request.auser()`` (both lazy, as
in Django). It never saves the session. A request without a session cookie
has no user in its session, so it gets Django's ``AnonymousUser`` at once
(what ``get_user`` would find, without looking).

Unlike Django's ``AuthenticationMiddleware``, it makes no reference cycle
between the request and its lazy user: the request is freed as soon as the
handler lets go of it, not at the next garbage collection. (With thousands
of long-polls re-armed at once, that collection's work was a fifth of a
poll's CPU.)

Use it through ``EVENTS["MIDDLEWARE"]`` (see ``handlers.py``), not in
``settings.MIDDLEWARE``.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from importlib import import_module
from typing import TYPE_CHECKING, Generic, TypeVar

from asgiref.sync import markcoroutinefunction
from django.conf import settings
from django.contrib.auth.middleware import auser, get_user
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.functional import SimpleLazyObject

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser

T = TypeVar("T")


class OfRequest(Generic[T]):
    """``function(request)`` as a callable that holds the request weakly (no cycle through its attributes)."""

    __slots__ = ("function", "request")

    def __init__(self, function: Callable[[HttpRequest], T], request: HttpRequest) -> None:
        self.function = function
        self.request = weakref.ref(request)

    def __call__(self) -> T:
        request = self.request()
        if request is None:
            raise RuntimeError("the request this user belonged to is gone")
        return self.function(request)


class Anonymous:
    """``request.auser`` of a request without a session: its ``AnonymousUser``."""

    __slots__ = ("user",)

    def __init__(self, user: AnonymousUser) -> None:
        self.user = user

    async def __call__(self) -> AnonymousUser:
        return self.user


class SessionUserMiddleware:
    async_capable = True
    sync_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]]) -> None:
        from django.contrib.auth.models import AnonymousUser  # needs the app registry

        self.get_response = get_response
        self.SessionStore = import_module(settings.SESSION_ENGINE).SessionStore
        self.AnonymousUser = AnonymousUser
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
        request.session = self.SessionStore(session_key)
        if session_key is None:
            anonymous = self.AnonymousUser()
            request.user = anonymous
            request.auser = Anonymous(anonymous)
        else:
            request.user = SimpleLazyObject(OfRequest(get_user, request))  # type: ignore[assignment]
            request.auser = OfRequest(auser, request)
        return await self.get_response(request)
