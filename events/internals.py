"""Every reliance on behaviour that Django, uvicorn, redis-py or asyncio do not document, in one place.

The rest of ``events/`` uses public API only. What is here is used because
the public way costs a thread per open stream or a task wake-up per delivered
event; each item says why, and ``tests/test_internals.py`` fails loudly,
naming the item, when a release changes it (run on Django 5.2 and 6.x).

1. **Django's ASGI handler methods** (not underscored, but not documented
   either): :data:`DJANGO_HANDLER_METHODS`. Django's ``ASGIHandler.__call__``
   wraps every request in asgiref's ``ThreadSensitiveContext``, which keeps
   one executor thread alive per open request (10,000 threads for 10,000
   streams). ``handlers.py`` serves the event endpoints without that context
   and so calls the steps ``__call__`` would: read the body, build the
   request, run the middleware chain, send the response.
2. **A coroutine stepped by hand** (:func:`start_coroutine`): PEP 492's
   coroutine protocol plus asyncio's convention that a suspended coroutine
   yields the future it waits for. Used to hand one frame to many clients in
   one loop without a task per client (see ``subscriber.py``).
3. **uvicorn's send completes without suspending** when the socket is not
   paused (its ``RequestResponseCycle.send`` awaits only while the transport
   is paused). Not relied on for correctness: a send that does suspend is
   finished by the client's own task. Relied on for speed only.
4. **The connection under uvicorn's send** (:func:`uvicorn_transport`), to
   abort a stream whose client stopped reading (``transport.py``): ASGI gives
   no way to reach the socket. Under another server it is None, and such a
   stream is only cancelled.
5. **hypercorn's shutdown event in a worker process**
   (:func:`hypercorn_shutdown_event`): hypercorn's parent process takes the
   stop signal and sets a ``multiprocessing`` event, which its worker polls;
   the application is told nothing until its requests are done or cancelled.
   The event is the worker process's ``shutdown_event`` argument, read from
   ``multiprocessing``'s process object (its ``_target`` and ``_kwargs``).
   Outside a hypercorn worker it is None.
6. **Django's ``convert_exception_to_response``**
   (``django.core.handlers.exception``): wraps each step of the event
   endpoints' middleware chain (``handlers.py``) so an exception becomes the
   response Django itself would give (404, 403, 400, 500), as its own
   handler does between middleware.
7. **Django's ``log_response``** (``django.utils.log``): the 4xx/5xx log
   line Django's handler writes (``django.request`` logger), written the same
   way for the event endpoints (``handlers.py``).
8. **``auser`` and ``get_user`` of ``django.contrib.auth.middleware``**: the
   module functions ``AuthenticationMiddleware`` uses to set
   ``request.user``/``request.auser``, used by the events' own lean
   middleware (``middleware.py``).
9. **``StreamingHttpResponse.streaming_content`` is a property** (getter
   and setter in the class dict): ``DirectResponse`` extends it
   (``direct.py``; the stream and the waiting long-poll) so a middleware
   that replaces the content is noticed.
10. **uvicorn installs its signal handlers before lifespan start-up**:
    ``asgi.py`` chains its shutdown hook in front of the handler found at
    start-up (streams learn of SIGTERM before uvicorn waits for them to end).
    With another order the hook would be replaced, not chained, and open
    streams would only end at the graceful-shutdown timeout.
11. **redis-py pool internals** (``redis_url.py``): a client's
    ``connection_pool.connection_class`` and ``connection_kwargs`` (to build
    the bounded, waiting pool from the same connection settings), and a
    Sentinel pool's ``sentinel_manager`` (to close its sentinel connections).
12. **The timestamp inside a signed value** (:func:`signed_timestamp`):
    ``django.core.signing`` (``b62_decode`` and the ``value:timestamp:signature``
    layout), to end a stream opened with a subscribe token when the token
    expires and to refuse a token dated in the future (``tokens.py``).
13. **uvicorn's httptools cycle state** (:func:`uvicorn_raw_writer`): for
    a streaming response under uvicorn's httptools protocol, what
    ``RequestResponseCycle.send`` does with a body chunk while the socket is
    not paused is exactly ``transport.write(b"%x\\r\\n" % len(body) + body +
    b"\\r\\n")``. The hub writes one such pre-framed chunk per event to every
    idle client of a topic (``subscriber.py``), skipping the per-client
    coroutine and message dict, but only when the cycle's public state
    (``flow.write_paused``, ``disconnected``, ``response_started``,
    ``response_complete``, ``chunked_encoding``, the method) says ``send``
    would do just that; otherwise it calls ``send``. Not for h11 (it frames
    through its own state machine) nor any other server.
14. **How uvicorn's httptools cycle says the client left**
    (:func:`uvicorn_disconnect_hook`): its ``connection_lost`` sets
    ``cycle.disconnected`` and then calls ``cycle.message_event.set()``. A
    stream learns of the disconnect by putting a :class:`DisconnectHook` in
    that attribute once the request is read, instead of waiting in
    ``receive()``, which would cost every open stream a task, two coroutine
    frames, a future and an ``asyncio.Event`` (about 1.5 KB a stream,
    measured by ``bench/``). The hook keeps ``message_event``'s behaviour
    for anyone who still calls ``receive()``. httptools only, as item 13.

15. **Django's ``Signal._live_receivers(sender)``** (:func:`sync_receivers`, :func:`receivers_among`),
    the one private Django method used: the receivers a ``send`` would call,
    as ``(sync, async)`` lists (Django 5.0 to 6.x). A verdict on them is
    kept while the signal's ``receivers`` list is unchanged and its
    ``_dead_receivers`` flag is down (what ``connect``, ``disconnect`` and a
    dead weak receiver change). ``request_started``'s
    trip to the sync thread is skipped only when its receivers are exactly
    Django's own database ones and that thread never had a database
    connection, so they would do nothing there (``sync_trips.py``); the trip
    is an eighth of a stream's set-up CPU.
16. **Django's stock ``request_finished`` receivers**
    (:func:`request_finished_stock_receivers`): ``close_old_connections``
    (``django.db``), ``close_caches`` (``django.core.cache``) and
    ``reset_urlconf`` (``django.core.handlers.base``), each connected there
    at import. ``request_finished``'s trip is skipped when its receivers are
    only these and none of them has anything to do (``sync_trips.py``): a
    tenth of a long-poll's CPU.
17. **asgiref's ``Local`` keeps its values in context variables**
    (:func:`context_is_empty`): outside a thread-critical ``Local``, a value
    set in a request's context is a ``contextvars`` variable set there.
    Django keeps the urlconf, the script prefix and its open caches in such
    ``Local`` objects, and reading one that is not set raises (and formats)
    two ``AttributeError``s: a few per cent of a long-poll's CPU. A request
    task whose context has no variable set at all (under uvicorn every
    request starts so) has none of them, without asking each.

No other private (underscored) attribute of Django or uvicorn is read or
written; item 5 reads two of the standard library's ``multiprocessing.Process``.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Coroutine, Generator
from functools import cache
from types import CoroutineType
from typing import Any

from django.dispatch import Signal

# Methods of django.core.handlers.asgi.ASGIHandler that handlers.py calls (and
# the module function get_script_prefix(scope) -> str)
# instead of ASGIHandler.__call__ (item 1 above). Same names and signatures in
# Django 5.2 and 6.x; tests/test_internals.py checks each one.
DJANGO_HANDLER_METHODS = (
    "create_request",  # (scope, body_file) -> (request, None) | (None, error response)
    "get_response_async",  # (request) -> response, through settings.MIDDLEWARE
    "send_response",  # (response, send): headers and body as ASGI messages
)


class PendingSend:
    """A coroutine that suspended when first stepped: awaiting this finishes it."""

    __slots__ = ("coro", "waiting_for")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting_for: object) -> None:
        self.coro = coro
        self.waiting_for = waiting_for

    def __await__(self) -> Generator[Any, None, None]:
        coro = self.coro
        try:
            while True:
                waiting_for = self.waiting_for
                if asyncio.isfuture(waiting_for):
                    # The coroutine is parked in ``await future``: wait for
                    # that future here, then let the coroutine read its result
                    # (or exception) itself when resumed.
                    if not waiting_for.done():
                        try:
                            yield from asyncio.wait((waiting_for,)).__await__()
                        except asyncio.CancelledError:
                            waiting_for.cancel()
                            raise
                elif waiting_for is None:
                    # A bare ``yield`` (asyncio.sleep(0)): one loop turn.
                    yield None
                else:
                    raise RuntimeError(f"a coroutine yielded {waiting_for!r}, which is not an asyncio future")
                try:
                    self.waiting_for = coro.send(None)
                except StopIteration:
                    return
        finally:
            # Runs the coroutine's own cleanup when it did not finish (cancelled).
            coro.close()


def start_coroutine(coro: Awaitable[None]) -> PendingSend | None:
    """Run ``coro`` up to its first suspension: None if it finished, else what finishes it.

    Exceptions from the coroutine's first step propagate. The caller must
    await the returned :class:`PendingSend` (in some task) before starting
    anything that must come after it.
    """
    # The exact type first: a C-level check, once per client per event.
    if type(coro) is not CoroutineType and not isinstance(coro, Coroutine):
        raise TypeError(f"expected a coroutine, got {coro!r}")
    try:
        waiting_for = coro.send(None)
    except StopIteration:
        return None
    except BaseException:
        coro.close()
        raise
    return PendingSend(coro, waiting_for)


def uvicorn_transport(send: object) -> object | None:
    """The asyncio transport under uvicorn's ASGI ``send`` (item 4 above), or None.

    None unless ``send`` is uvicorn's own: a ``send`` wrapped by an ASGI
    middleware (Sentry's, OpenTelemetry's, a timeout) is the middleware's, and
    calling it from another task would run the middleware in that task's
    context, so such a request gets the plain path.
    """
    # uvicorn internal 1: ``send`` is ``RequestResponseCycle.send``, a bound
    # method; ``__self__`` is the cycle (httptools_impl and h11_impl alike).
    cycle = getattr(send, "__self__", None)
    if cycle is None or getattr(send, "__name__", None) != "send":
        return None
    kind = type(cycle)
    if kind.__name__ != "RequestResponseCycle" or not kind.__module__.startswith("uvicorn.protocols.http."):
        return None
    # uvicorn internal 2: the cycle's ``transport`` attribute is the
    # connection's asyncio transport (uvloop's or asyncio's).
    return getattr(cycle, "transport", None)


class RawWriter:
    """Writes pre-framed body chunks straight to uvicorn's transport, when ``send`` would do only that (item 13)."""

    __slots__ = ("cycle", "flow")

    def __init__(self, cycle: Any) -> None:
        self.cycle = cycle
        self.flow = cycle.flow

    def try_write(self, chunk: bytes) -> bool:
        """Write ``chunk`` (HTTP/1.1 chunk framing included) if the socket takes it now; False: use ``send``."""
        cycle = self.cycle
        if self.flow.write_paused or cycle.disconnected or cycle.response_complete:
            return False
        cycle.transport.write(chunk)
        return True


def uvicorn_httptools_cycle(send: object) -> Any | None:
    """The ``RequestResponseCycle`` behind uvicorn's own httptools ``send`` (items 13 and 14), or None."""
    if uvicorn_transport(send) is None:
        return None
    cycle = getattr(send, "__self__", None)
    return cycle if type(cycle).__module__ == "uvicorn.protocols.http.httptools_impl" else None


def uvicorn_raw_writer(send: object) -> RawWriter | None:
    """A :class:`RawWriter` for a started chunked response under uvicorn's httptools ``send`` (item 13), or None."""
    cycle = uvicorn_httptools_cycle(send)
    if cycle is None:
        return None
    try:
        framed = (
            cycle.response_started is True
            and cycle.chunked_encoding is True
            and cycle.response_complete is False
            and cycle.scope["method"] != "HEAD"
            and isinstance(cycle.flow.write_paused, bool)
            and isinstance(cycle.disconnected, bool)
        )
    except (AttributeError, KeyError, TypeError):
        return None
    return RawWriter(cycle) if framed else None


class DisconnectHook:
    """Takes the place of uvicorn httptools' ``cycle.message_event`` once a request is read (item 14).

    uvicorn calls ``set()`` when the client disconnects (after setting
    ``cycle.disconnected``) and when the response completes; on a disconnect
    the request's task is cancelled, as a ``receive()`` returning
    ``http.disconnect`` would have it. Otherwise it is an ``asyncio.Event``:
    ``set``, ``clear``, ``is_set`` and ``wait`` (an Event made only if
    someone waits).
    """

    __slots__ = ("_event", "_flag", "cycle", "task")

    def __init__(self, cycle: Any, task: asyncio.Task[Any], flag: bool) -> None:
        # None once stopped (with ``task``).
        self.cycle: Any = cycle
        self.task: asyncio.Task[Any] | None = task
        self._flag = flag
        self._event: asyncio.Event | None = None

    def set(self) -> None:
        self._flag = True
        if self._event is not None:
            self._event.set()
        task = self.task
        if task is not None and self.cycle.disconnected:
            self.task = None
            task.cancel()

    def clear(self) -> None:
        self._flag = False
        if self._event is not None:
            self._event.clear()

    def is_set(self) -> bool:
        return self._flag

    async def wait(self) -> bool:
        if self._flag:
            return True
        if self._event is None:
            self._event = asyncio.Event()
        return await self._event.wait()

    def stop(self) -> None:
        """The request is done: a later disconnect cancels nothing.

        Also lets go of the cycle, which holds this hook: without that
        reference cycle both are freed with the connection's next request,
        not by the garbage collector.
        """
        self.task = None
        self.cycle = None


def uvicorn_disconnect_hook(send: object, task: asyncio.Task[Any]) -> DisconnectHook | None:
    """Cancel ``task`` when the client of uvicorn httptools' ``send`` disconnects (item 14), or None.

    Call it once the request's body has been received. None under any other
    server (or a wrapped ``send``): then wait in ``receive()``.
    """
    cycle = uvicorn_httptools_cycle(send)
    if cycle is None:
        return None
    event = getattr(cycle, "message_event", None)
    if type(event) is not asyncio.Event or not isinstance(getattr(cycle, "disconnected", None), bool):
        return None
    hook = DisconnectHook(cycle, task, event.is_set())
    cycle.message_event = hook
    if cycle.disconnected:
        hook.set()
    return hook


def hypercorn_shutdown_event() -> Any | None:
    """The ``multiprocessing`` event a hypercorn worker process stops on (item 5 above), or None."""
    import multiprocessing

    process = multiprocessing.current_process()
    target = getattr(process, "_target", None)
    if target is None or not getattr(target, "__module__", "").startswith("hypercorn."):
        return None
    event = (getattr(process, "_kwargs", None) or {}).get("shutdown_event")
    return event if callable(getattr(event, "is_set", None)) else None


def context_is_empty() -> bool:
    """Whether no context variable is set in the running context: then no asgiref ``Local`` has a value (item 17)."""
    return not len(contextvars.copy_context())


def sync_receivers(signal: Signal, sender: object) -> list[Callable[..., Any]] | None:
    """The sync receivers ``signal.send(sender)`` would call, or None if there are async ones too (item 15)."""
    sync, asynchronous = signal._live_receivers(sender)
    return None if asynchronous else list(sync)


# receivers_among's verdicts: (signal, sender, allowed) -> (signal, its
# receivers list as seen then, verdict). The signal is held so that its id is
# not reused; the list holds weak receivers weakly, as the signal does.
_verdicts: dict[tuple[int, object, tuple[Callable[..., Any], ...]], tuple[Signal, list[Any], bool]] = {}


def receivers_among(signal: Signal, sender: object, allowed: tuple[Callable[..., Any], ...]) -> bool:
    """Whether ``signal.send(sender)`` would call only sync receivers, all in ``allowed`` (item 15).

    Asked twice per request, so the verdict is kept while the signal's
    ``receivers`` list is what it was (``connect`` and ``disconnect`` change
    it) and none of its weak receivers has died since (``_dead_receivers``).
    """
    key = (id(signal), sender, allowed)
    seen = _verdicts.get(key)
    dead: bool = signal._dead_receivers  # type: ignore[attr-defined]  # django-stubs leave it out
    if seen is not None and seen[0] is signal and not dead and signal.receivers == seen[1]:
        return seen[2]
    receivers = sync_receivers(signal, sender)
    verdict = receivers is not None and all(receiver in allowed for receiver in receivers)
    _verdicts[key] = (signal, list(signal.receivers), verdict)
    return verdict


@cache
def request_finished_stock_receivers() -> tuple[Callable[..., Any], ...]:
    """The receivers Django itself connects to ``request_finished`` (item 16)."""
    from django.core.cache import close_caches
    from django.core.handlers.base import reset_urlconf
    from django.db import close_old_connections

    return (close_old_connections, close_caches, reset_urlconf)


def signed_timestamp(signed: str) -> int:
    """The Unix time (seconds) at which a ``django.core.signing`` timestamped value was signed (item 12).

    Django checks a signature's age (``max_age``) but does not hand the
    timestamp out: it is the middle part of ``<value>:<timestamp>:<signature>``
    in base 62. Call only on a value whose signature was verified.
    """
    from django.core import signing

    _, timestamp, _ = signed.rsplit(":", 2)
    return int(signing.b62_decode(timestamp))
