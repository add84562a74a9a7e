"""ASGI glue: lifespan for the hub, prompt shutdown, a tuned garbage collector.

Django has no ASGI lifespan support (it raises on the lifespan scope), so
``project/asgi.py`` wraps Django's handler with :func:`events_asgi_app`::

    application = events_asgi_app()

which

- answers ``lifespan``: on startup it checks the Redis settings (a TLS
  certificate that does not verify or refused credentials are fatal; Redis
  being down is not), starts this process's hub and hooks SIGTERM/SIGINT; on shutdown it stops the hub and closes Redis clients. Run
  uvicorn with ``--lifespan on`` so a startup failure is fatal;
- ends open streams as soon as the server is told to stop. uvicorn waits for
  open requests before running lifespan shutdown, so that is too late; instead
  the signal handler uvicorn installed is chained (not replaced, no server
  class patched): ours asks the hub to end every stream cleanly, then calls
  uvicorn's. ``--timeout-graceful-shutdown`` stays the backstop;
- serves the events views through ``handlers.EventsASGIHandler``: no thread
  per open stream, and optionally a short async middleware chain.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable
from types import FrameType

from .backends.active import get_hub, pop_hub
from .backends.cluster.connection import aclose_clusters
from .backends.connection import aclose_clients, verify_redis_settings
from .conf import conf
from .serving.asgi_types import ASGIApp, Receive, Scope, Send
from .serving.handlers import EventsASGIHandler

logger = logging.getLogger(__name__)


SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class LifespanApp:
    """Wraps an ASGI app and handles the ``lifespan`` scope for the events hub."""

    def __init__(self, app: ASGIApp) -> None:
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
                    await verify_redis_settings()
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
    await aclose_clusters()


def events_asgi_app() -> LifespanApp:
    """The project's ASGI application: Django (thread-lean for events) plus lifespan.

    Use it instead of Django's ``get_asgi_application()``: it starts and stops
    each worker's Redis hub (run uvicorn with ``--lifespan on``), ends open
    streams promptly on shutdown, and serves streams without a thread each.

    Example (``mysite/asgi.py``)::

        import os

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

        from events.asgi import events_asgi_app

        application = events_asgi_app()
    """
    import django

    django.setup(set_prefix=False)
    return LifespanApp(EventsASGIHandler())
