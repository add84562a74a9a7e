"""Learning that the server is stopping, whichever ASGI server it is.

Open streams never finish by themselves, and most servers wait for open
requests before they run lifespan shutdown (uvicorn for ever, or up to
``--timeout-graceful-shutdown``; hypercorn ``--graceful-timeout``, then
cancels them with a traceback each), and daphne has no lifespan at all. So
each server's own stop signal is caught as early as the server itself sees
it, and the one entry point, ``get_hub().begin_shutdown()``, ends every
stream with its closing comment and a clean end of body:

- **uvicorn** (alone, or as gunicorn's ``uvicorn_worker``), **daphne**
  (Twisted) and hypercorn run with ``--workers 0`` install Python-level
  handlers for SIGTERM/SIGINT (hypercorn's asyncio ``add_signal_handler``
  installs a no-op one next to its wake-up fd). Those handlers are chained,
  not replaced: ours runs first, then the server's.
- **daphne**: Twisted's handler stops the reactor, whose first step cancels
  every application at once (``Server.kill_all_applications``), before a
  stream could write its end. So under Twisted the server's handler is
  called once the hub has no client left (at most the drain's length plus
  :data:`DRAIN_SLACK` seconds later).
- **gunicorn's master** on SIGINT/SIGQUIT sends its workers SIGQUIT ("quick
  stop"), which uvicorn itself does not handle (the worker class only marks
  itself not alive, and the master SIGKILLs it after ``--graceful-timeout``).
  A chained SIGQUIT handler therefore also runs the worker's SIGTERM
  handler: uvicorn's own graceful exit, which is quick once streams ended.
- **hypercorn** (default, worker processes): the signal goes to hypercorn's
  parent process, which sets a ``multiprocessing`` event that the worker
  polls every 0.1 s. That event is found as the worker process's argument
  (:func:`events.internals.hypercorn_shutdown_event`) and polled the same way.
- **granian** handles signals in Rust and sends lifespan shutdown before it
  waits for connections, so lifespan shutdown is enough there.

Servers that install their handlers after lifespan startup (or have no
lifespan) are caught by :func:`watch` running again on the first request
(``events.asgi``): it is idempotent, and cheap after the first time.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from ..conf import conf
from ..core.tasks import cancel_and_wait
from ..internals import hypercorn_shutdown_event

SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Gunicorn's "quick stop" of a worker (see the module doc).
QUICK_STOP_SIGNAL = signal.SIGQUIT
# Longest wait for the streams to end before a Twisted reactor is stopped,
# beyond the drain's own length (open streams / EVENTS["DRAIN_RATE"]).
DRAIN_SLACK = 2.0
# How often hypercorn's own worker polls its shutdown event (same period).
HYPERCORN_POLL = 0.1

Handler = Callable[[int, FrameType | None], Any]


class ShutdownWatch:
    """The per-process watch: which signals are chained, which loop to tell, the hypercorn poller."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopping = False
        self.poller: asyncio.Task[None] | None = None
        self.drainer: asyncio.Task[None] | None = None

    def watch(self) -> None:
        """Hook every stop signal the running server has, for the running loop. Idempotent."""
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            self.loop, self.stopping = loop, False
        for signum in (*SHUTDOWN_SIGNALS, QUICK_STOP_SIGNAL):
            self._chain(signum)
        if self.poller is None or self.poller.done():
            event = hypercorn_shutdown_event()
            if event is not None:
                self.poller = loop.create_task(self._poll(event), name="events-hypercorn-shutdown")

    async def close(self) -> None:
        """Stop the poller and drainer (lifespan shutdown)."""
        for task in (self.poller, self.drainer):
            if task is not None and task is not asyncio.current_task():
                await cancel_and_wait(task)
        self.poller = self.drainer = None

    def begin(self) -> None:
        """Tell this process's hub, in its loop's thread: end every client now."""
        self.stopping = True
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(begin_shutdown)

    def _chain(self, signum: int) -> None:
        try:
            previous = signal.getsignal(signum)
        except ValueError:
            return
        if not callable(previous) or getattr(previous, "events_chained", False):
            # No Python-level server handler (a server run in a thread
            # installs none; SIGQUIT is left to the default), or done already.
            return

        def handler(sig: int, frame: FrameType | None) -> None:
            first = not self.stopping
            self.begin()
            if sig == QUICK_STOP_SIGNAL:
                previous(sig, frame)
                term = signal.getsignal(signal.SIGTERM)
                if callable(term):
                    term(signal.SIGTERM, frame)
            elif first and _is_twisted(previous) and self.loop is not None:
                self.loop.call_soon_threadsafe(self._drain_then, previous, sig, frame)
            else:
                previous(sig, frame)

        handler.events_chained = True  # type: ignore[attr-defined]
        try:
            signal.signal(signum, handler)
        except ValueError:
            pass  # not the main thread

    def _drain_then(self, previous: Handler, sig: int, frame: FrameType | None) -> None:
        assert self.loop is not None
        self.drainer = self.loop.create_task(self._call_when_drained(previous, sig, frame), name="events-drain")

    async def _call_when_drained(self, previous: Handler, sig: int, frame: FrameType | None) -> None:
        from ..backends.active import get_hub

        hub = get_hub()
        loop = asyncio.get_running_loop()
        rate = conf.DRAIN_RATE
        deadline = loop.time() + DRAIN_SLACK + (len(hub.streams) / rate if rate > 0 else 0.0)
        # The hub says when its last client detached; no event for it, so a short poll.
        while (hub.streams or hub.polls) and loop.time() < deadline:  # noqa: ASYNC110  (no event to wait on)
            await asyncio.sleep(0.01)
        # One more turn, so the last bodies' ends are handed to the transport.
        await asyncio.sleep(0)
        previous(sig, frame)

    async def _poll(self, event: Any) -> None:
        while not event.is_set():  # noqa: ASYNC110  (a multiprocessing event: polled, as hypercorn does)
            await asyncio.sleep(HYPERCORN_POLL)
        self.begin()


def begin_shutdown() -> None:
    """The one entry point: ``get_hub().begin_shutdown()`` for the running loop's hub."""
    from ..backends.active import get_hub

    get_hub().begin_shutdown()


def _is_twisted(handler: Handler) -> bool:
    owner = getattr(handler, "__self__", None)
    return owner is not None and type(owner).__module__.startswith("twisted.")


shutdown_watch = ShutdownWatch()
