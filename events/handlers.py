"""Django ASGI handlers for the event endpoints: no thread per stream, a short middleware chain.

Django runs each request in its own ``ThreadSensitiveContext``, which keeps one
executor thread alive per open request (10,000 threads for 10,000 streams).
The stream and poll views touch no ORM while they wait, so they are marked
``thread_lean`` and run without that context, sharing asgiref's single sync
thread for the few sync calls Django makes (request signals,
``response.close()``). With ``EVENTS["MIDDLEWARE"]`` set they also skip
``settings.MIDDLEWARE`` for their own async chain: Django's stock middleware
are sync, and each of their hooks costs a thread trip per request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import Resolver404, get_resolver
from django.utils.module_loading import import_string

from .asgi_types import Scope
from .conf import conf
from .errors import as_json

logger = logging.getLogger(__name__)

# Set in the scope of every HTTP request EventsASGIHandler serves, so a view
# can tell it was not served by Django's stock handler.
SERVED_KEY = "events.handler"

ViewT = TypeVar("ViewT", bound=Callable[..., Any])


def thread_lean(view: ViewT) -> ViewT:
    """Mark an async view as safe to run without a per-request thread (see module doc)."""
    view.events_thread_lean = True  # type: ignore[attr-defined]
    return view


class EventsASGIHandler(ASGIHandler):
    """Django's ASGI handler; ``thread_lean`` views run without a per-request thread.

    With ``EVENTS["MIDDLEWARE"]`` set, those views also go through that
    (shorter, async) middleware chain instead of ``settings.MIDDLEWARE``.
    """

    # Paths seen, and whether they lead to a thread-lean view (URLconfs do not
    # change while a process runs). Bounded: cleared when full.
    PATH_CACHE_SIZE = 4096

    def __init__(self) -> None:
        super().__init__()
        self.lean_handler: ASGIHandler = self if conf.MIDDLEWARE is None else EventsMiddlewareHandler()
        self._lean_paths: dict[str, bool] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope[SERVED_KEY] = True
        if scope["type"] == "http" and self._is_thread_lean(scope):
            await self.lean_handler.handle(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        response = await super().get_response_async(request)
        # The event endpoints answer errors in JSON, whoever made the error.
        if self._is_thread_lean(getattr(request, "scope", {})):
            response = as_json(response)
        return response

    def _is_thread_lean(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        lean = self._lean_paths.get(path)
        if lean is None:
            try:
                match = get_resolver().resolve(path or "/")
            except Resolver404:
                lean = False
            else:
                lean = bool(getattr(match.func, "events_thread_lean", False))
            if len(self._lean_paths) >= self.PATH_CACHE_SIZE:
                self._lean_paths.clear()
            self._lean_paths[path] = lean
        return lean


class EventsMiddlewareHandler(ASGIHandler):
    """A Django handler whose middleware chain is ``EVENTS["MIDDLEWARE"]``.

    Only async-capable middleware may be listed: a sync-only one would cost a
    thread trip per request, which is what this chain exists to avoid (system
    check ``events.E008``). The chain is built as Django builds its own, minus
    the sync/async adaptation.
    """

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        return as_json(await super().get_response_async(request))

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        handler = convert_exception_to_response(self._get_response_async)  # type: ignore[attr-defined]
        for path in reversed(conf.MIDDLEWARE or []):
            factory = import_string(path)
            if not getattr(factory, "async_capable", False):
                raise ImproperlyConfigured(f"EVENTS['MIDDLEWARE'] lists {path!r}, which is not async-capable.")
            try:
                instance = factory(handler)
            except MiddlewareNotUsed:
                continue
            if hasattr(instance, "process_view"):
                self._view_middleware.insert(0, self.adapt_method_mode(True, instance.process_view))
            if hasattr(instance, "process_template_response"):
                self._template_response_middleware.append(
                    self.adapt_method_mode(True, instance.process_template_response)
                )
            if hasattr(instance, "process_exception"):
                self._exception_middleware.append(self.adapt_method_mode(False, instance.process_exception))
            handler = convert_exception_to_response(instance)
        self._middleware_chain = handler


class _StockHandlerWarning:
    """Warns once per process that an event endpoint is served without ``events_asgi_app()``.

    Under Django's stock ``get_asgi_application()`` (or WSGI) the endpoints
    still answer, but what ``events_asgi_app()`` adds is silently missing.
    Once is enough to point at the fix; more would flood the log.
    """

    def __init__(self) -> None:
        self.warned = False

    def check(self, request: HttpRequest) -> None:
        if self.warned or getattr(request, "scope", {}).get(SERVED_KEY):
            return
        self.warned = True
        logger.warning(
            "events: %s is served without events.asgi.events_asgi_app() (by Django's stock "
            "get_asgi_application() or WSGI), so: open streams do not end promptly on shutdown "
            "(the server waits for each one), every open stream holds a thread, and the hub's "
            "lifespan (start-up check, Redis clean-up at shutdown) does not run. In your project's "
            "asgi.py, set `application = events.asgi.events_asgi_app()` and run uvicorn with --lifespan on.",
            request.path,
        )


warn_unless_events_handler = _StockHandlerWarning().check
