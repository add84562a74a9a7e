"""ASGI glue: lifespan for the hub, prompt shutdown, and one thread for all streams.

Django has no ASGI lifespan support (it raises on the lifespan scope), so
``project/asgi.py`` wraps Django's handler with :func:`events_asgi_app`::

    application = events_asgi_app()

which

- answers ``lifespan``: on startup it starts this process's hub and hooks
  SIGTERM/SIGINT; on shutdown it stops the hub and closes Redis clients. Run
  uvicorn with ``--lifespan on`` so a startup failure is fatal;
- ends open streams as soon as the server is told to stop. uvicorn waits for
  open requests before running lifespan shutdown, so that is too late; instead
  the signal handler uvicorn installed is chained (not replaced, no server
  class patched): ours asks the hub to end every stream cleanly, then calls
  uvicorn's. ``--timeout-graceful-shutdown`` stays the backstop;
- serves the events views without a per-request thread. Django runs each
  request in its own ``ThreadSensitiveContext``, which keeps one executor
  thread alive per open request (10,000 threads for 10,000 streams). The
  stream and poll views touch no ORM while they wait, so their requests run
  without that context and share asgiref's single sync thread for the few
  sync calls Django makes (request signals, ``response.close()``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, MutableMapping
from types import FrameType
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.urls import Resolver404, get_resolver
from django.utils.module_loading import import_string

from .conf import conf
from .connection import aclose_clients
from .hub import get_hub, pop_hub

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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
        if scope["type"] == "http" and self._is_thread_lean(scope):
            await self.lean_handler.handle(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

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


class LifespanApp:
    """Wraps an ASGI app and handles the ``lifespan`` scope for the events hub."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
        else:
            await self.app(scope, receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    startup()
                except Exception as exc:
                    logger.exception("events: startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def startup() -> None:
    """Tune the garbage collector, start this process's hub, chain the shutdown signals."""
    tune_garbage_collector()
    hub = get_hub()
    hub.start()
    loop = asyncio.get_running_loop()
    for signum in SHUTDOWN_SIGNALS:
        _chain_signal(signum, lambda: loop.call_soon_threadsafe(hub.begin_shutdown))


def _chain_signal(signum: int, on_signal: Callable[[], object]) -> None:
    """Run ``on_signal`` before the server's own handler for ``signum``, if it has one."""
    try:
        previous = signal.getsignal(signum)
    except ValueError:
        return
    if not callable(previous) or getattr(previous, "events_chained", False):
        # No Python-level server handler (e.g. a server run in a thread by
        # tests installs none), or already chained: nothing to do.
        return

    def handler(sig: int, frame: FrameType | None) -> None:
        on_signal()
        previous(sig, frame)

    handler.events_chained = True  # type: ignore[attr-defined]
    try:
        signal.signal(signum, handler)
    except ValueError:
        pass  # not the main thread


def tune_garbage_collector() -> None:
    """Keep Python's cyclic garbage collector from eating a streaming worker's CPU.

    Every open stream keeps a few hundred long-lived objects (tasks,
    coroutine frames, request and response), and every delivery allocates a
    few more. With the default thresholds (700, 10, 10) a worker holding
    thousands of streams spends about 40 % of its CPU in collections, and the
    full ones stall every stream for up to a second (measured by bench/).
    Larger thresholds collect as much garbage, just in bigger, rarer batches;
    ``gc.freeze()`` first moves everything built at start-up (modules, URL
    patterns, settings) out of the collector's sight for good.
    """
    thresholds = conf.GC_THRESHOLD
    if thresholds is None:
        return
    gc.freeze()
    gc.set_threshold(*thresholds)


async def shutdown() -> None:
    """Stop this process's hub and close its Redis clients."""
    hub = pop_hub()
    if hub is not None:
        await hub.stop()
    await aclose_clients()


def events_asgi_app() -> LifespanApp:
    """The project's ASGI application: Django (thread-lean for events) plus lifespan."""
    import django

    django.setup(set_prefix=False)
    return LifespanApp(EventsASGIHandler())
