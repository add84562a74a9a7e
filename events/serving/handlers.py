"""Django ASGI handler for the event endpoints: no thread per stream, a short middleware chain.

Django's ``ASGIHandler.__call__`` runs each request in asgiref's
``ThreadSensitiveContext``, which keeps one executor thread alive per open
request (10,000 threads for 10,000 streams), and serves it with two more tasks
(one waits for the disconnect, one runs the view). The stream and poll views
touch no ORM while they wait, so they are marked ``thread_lean`` and served
here instead: the same steps as Django's handler (body, ``request_started``,
request, middleware and view, response, ``request_finished``), without that
context, with one helper task that cancels the request when the client goes
away. Django's few sync calls (signal receivers, ``response.close()``) then
share asgiref's single sync thread.

Middleware: with ``EVENTS["MIDDLEWARE"]`` set, those views go through that
(shorter, async-only) chain, built here with the documented middleware
protocol; Django's stock middleware are sync, and each of their hooks costs a
thread trip per request. With ``None`` they go through ``settings.MIDDLEWARE``
(Django's own chain, ``get_response_async``).

Which requests: the decision is made before any middleware runs, so it
resolves the path in ``ROOT_URLCONF`` (cached, least recently used evicted).
The match is reused for the view unless a middleware of the lean chain sets
``request.urlconf``, which is then honoured. A site that routes the event
endpoints only through a per-request urlconf set by ``settings.MIDDLEWARE``
gets Django's ordinary handling for them (correct, a thread per stream).

Request bodies: the event endpoints take none, so a request that announces
one (``Content-Length`` above 0, or ``Transfer-Encoding``) is answered with a
JSON ``400`` before a byte of it is read; Django's ``read_body`` would spool
any size to disk first. (The empty body is received without it.)

Under uvicorn's own ``send`` (no ASGI middleware wrapping it), a stream's
connection can be aborted and the hub may write to it directly
(``transport.py``); otherwise the request takes the plain path, so a
wrapping middleware's ``send`` only ever runs in its own request's task.

The Django handler methods used here are listed, with why, in ``internals.py``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import aclosing
from functools import lru_cache, partial
from typing import Any, TypeVar

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed, RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import Resolver404, ResolverMatch, get_resolver, get_urlconf, set_script_prefix, set_urlconf
from django.urls import get_script_prefix as django_script_prefix
from django.utils.log import log_response
from django.utils.module_loading import import_string

from ..conf import conf
from ..http.errors import as_json
from ..http.polling import LongPollResponse, PollAnswer
from ..http.streaming import DirectStream, EventStreamResponse
from ..internals import DisconnectHook, context_is_empty, uvicorn_disconnect_hook, uvicorn_httptools_cycle
from . import transport
from .asgi_types import Receive, Scope, Send
from .public import open_public_poll, open_public_stream, public_poll, public_stream
from .sync_trips import sync_trips

logger = logging.getLogger(__name__)

GetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]
# Opens an anonymous request on public topics without a Django request (public.py), given ``send``.
PublicOpener = Callable[[Send], Awaitable[HttpResponseBase | PollAnswer | DirectStream]]

ViewT = TypeVar("ViewT", bound=Callable[..., Any])

# Set in the scope of every HTTP request EventsASGIHandler serves, so a view
# can tell it was not served by Django's stock handler.
SERVED_KEY = "events.handler"

# Distinct paths whose resolution is remembered (per process).
PATH_CACHE_SIZE = 1024


def thread_lean(view: ViewT) -> ViewT:
    """Mark an async view as safe to serve without a per-request thread (see module doc)."""
    if not iscoroutinefunction(view):
        raise TypeError(f"thread_lean needs an async view, got {view!r}")
    view.events_thread_lean = True  # type: ignore[attr-defined]
    return view


@lru_cache(maxsize=PATH_CACHE_SIZE)
def lean_match(urlconf: str, path: str) -> ResolverMatch | None:
    """The match of ``path`` in ``urlconf`` if it leads to a ``thread_lean`` view, else None."""
    try:
        match = get_resolver(urlconf).resolve(path)
    except Resolver404:
        return None
    return match if getattr(match.func, "events_thread_lean", False) else None


class EventsASGIHandler(ASGIHandler):
    """Django's ASGI handler; ``thread_lean`` views are served by :meth:`serve_lean`."""

    def __init__(self) -> None:
        super().__init__()
        self.lean_chain: GetResponse = (
            self.get_response_async if conf.MIDDLEWARE is None else build_chain(conf.MIDDLEWARE)
        )

    # Any, as ASGIHandler.__call__ is typed (django-stubs spell the ASGI types their own way).
    # Not ``async def``: it returns the coroutine that serves the request, so
    # an open stream keeps one coroutine frame less (marked as a coroutine
    # function below, for servers that look).
    def __call__(self, scope: Any, receive: Any, send: Any) -> Coroutine[Any, Any, None]:
        if scope["type"] == "http":
            scope[SERVED_KEY] = True
            match = lean_match(settings.ROOT_URLCONF, path_info(scope))
            if match is not None:
                # Anonymous clients of public topics, under uvicorn's httptools
                # (where this was measured): served without a Django request.
                served_directly = getattr(match.func, "events_public", None)
                if served_directly is not None and uvicorn_httptools_cycle(send) is not None:
                    if served_directly == "poll" and (poll := public_poll(scope)) is not None:
                        return self.serve_lean(scope, receive, send, match, partial(open_public_poll, *poll))
                    if served_directly == "stream" and (stream := public_stream(scope)) is not None:
                        return self.serve_lean(scope, receive, send, match, partial(open_public_stream, *stream))
                return self.serve_lean(scope, receive, send, match)
        return super().__call__(scope, receive, send)

    markcoroutinefunction(__call__)

    async def serve_lean(
        self, scope: Scope, receive: Receive, send: Send, match: ResolverMatch, public: PublicOpener | None = None
    ) -> None:
        """Serve one request as ``ASGIHandler.handle`` does, in this task, without a thread of its own.

        ``public``: an anonymous request on public topics (``public.py``),
        opened without a Django request, middleware or view (it has no body
        and needs no script prefix), then sent as the view's answer would be.
        """
        body_file: Any = None
        if public is None:
            if has_body(scope):
                # Refused before a byte of it is read: Django's read_body would
                # spool any size to disk first (a GET with Content-Length: 2 GiB).
                await send_refusal(send)
                return
            try:
                body_file = await read_empty_body(receive)
            except RequestAborted:
                return
        # While a stream is open this frame stays: it keeps nothing it does not need.
        try:
            if public is None:
                prefix = get_script_prefix(scope)
                # Unset in an empty context ("/"), which is cheaper to know than to read.
                current = "/" if context_is_empty() else django_script_prefix()
                if current != (prefix if prefix.endswith("/") else prefix + "/"):
                    set_script_prefix(prefix)
            # Django's two sync calls per request (here and at the end), each
            # sharing its trip to the sync thread with other requests' (sync_trips.py).
            trips = sync_trips()
            await trips.request_started(self.__class__, scope)
            task = asyncio.current_task()
            assert task is not None
            watcher = watch_disconnect(receive, send, task)
            response: HttpResponseBase | None = None
            try:
                # What to send: a response for Django to send, or, sent from
                # here, a long-poll's answer or a stream.
                opened: HttpResponseBase | PollAnswer | DirectStream | None
                if public is None:
                    opened = await self.respond(scope, send, match, body_file)
                    body_file = None  # closed by respond()
                else:
                    opened, public = await public(send), None  # the opener is not kept while streaming
                    if isinstance(opened, HttpResponseBase):  # a refusal (the view's chain logs its own)
                        await log_error(opened, scope["path"])
                response = opened if isinstance(opened, HttpResponseBase) else None
                if isinstance(opened, PollAnswer):
                    # Waited for in this frame alone (the request, middleware
                    # and response let go of: polling.py), then sent in one piece.
                    start, poll = opened
                    opened = None
                    body = poll if isinstance(poll, bytes) else await poll.answer()  # answer() detaches it
                    start["headers"].append((b"Content-Length", str(len(body)).encode()))
                    await send(start)
                    await send({"type": "http.response.body", "body": body, "more_body": False})
                elif isinstance(opened, DirectStream):
                    stream, opened = opened, None
                    await send(stream.take_start())
                    stream.attach(send)
                    async with aclosing(stream.stream) as chunks:
                        async for chunk in chunks:
                            await send({"type": "http.response.body", "body": chunk, "more_body": True})
                            # Not kept while waiting for the next (a replay batch is up to 1 MiB).
                            del chunk
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                else:
                    await self.send_response(response, send)  # type: ignore[arg-type]  # see __call__
            except asyncio.CancelledError:
                # The client went away, or a stuck stream was given up: end
                # quietly, as Django's handler does.
                if hasattr(task, "uncancel"):  # Python >= 3.11
                    task.uncancel()
            finally:
                watcher.stop()
        finally:
            if body_file is not None:
                body_file.close()
        if response is None:
            await trips.request_finished(self.__class__)
        else:
            await trips.call(response.close)  # sends request_finished

    async def respond(
        self, scope: Scope, send: Send, match: ResolverMatch, body_file: Any
    ) -> HttpResponseBase | PollAnswer | DirectStream:
        """The request through the middleware chain and the view: the response, or what of it to send directly.

        A waiting long-poll's answer and a stream are sent by :meth:`serve_lean`
        without their response object, which is not kept (nor is the request):
        closing it would only send ``request_finished``, which serve_lean does.
        """
        request, response = self.create_request(scope, body_file)
        if request is not None:
            request.resolver_match = match
            response = await self.lean_chain(request)
            # Not needed while streaming: let it (and its META) go.
            request.close()
        body_file.close()
        assert response is not None
        # The event endpoints answer errors in JSON, whoever made the error.
        response = as_json(response)
        if isinstance(response, LongPollResponse) and response.can_send_directly:
            return PollAnswer(response.start_message(), response.poll)
        # Only under uvicorn's own send (no ASGI middleware wrapping it):
        # after the write timeout its connection is aborted, and the hub may
        # write frames from its own task (transport.py).
        abort = transport.aborter(send) if isinstance(response, EventStreamResponse) else None
        if isinstance(response, EventStreamResponse) and abort is not None:
            response.subscriber.abort = abort
            if response.can_send_directly:
                return response.direct()
        return response


async def log_error(response: HttpResponseBase, path: str, request: HttpRequest | None = None) -> None:
    """Log a 4xx or 5xx answer as Django's handler does (``django.request``), off the event loop."""
    await sync_to_async(log_response, thread_sensitive=False)(
        "%s: %s",
        response.reason_phrase,
        path,
        response=response,  # type: ignore[arg-type]  # only its status is read
        request=request,
    )


def has_body(scope: Scope) -> bool:
    """Whether the request announces a body: ``Content-Length`` other than 0, or ``Transfer-Encoding``."""
    for name, value in scope.get("headers", ()):
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            return True
        if lowered == b"content-length" and value.strip() not in (b"0", b""):
            return True
    return False


async def read_empty_body(receive: Receive) -> io.BytesIO:
    """Receive the request's body, which is empty (``has_body`` refused any other), as Django's request wants it.

    Django's ``read_body`` would make a ``SpooledTemporaryFile`` per request
    for it. Bytes that come all the same (an HTTP/2 body announced by no
    header) are dropped: the event endpoints read no body. Raises
    ``RequestAborted`` if the client has gone.
    """
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestAborted()
        if not message.get("more_body", False):
            return io.BytesIO()


REFUSAL = json.dumps({"error": "The event endpoints take no request body.", "code": "body_not_allowed"}).encode()


async def send_refusal(send: Send) -> None:
    """A JSON 400, with ``Connection: close`` (the unread body must not be taken for the next request)."""
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(REFUSAL)).encode()),
                (b"cache-control", b"no-store"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": REFUSAL, "more_body": False})


def watch_disconnect(receive: Receive, send: Send, task: asyncio.Task[Any]) -> DisconnectHook | DisconnectWatcher:
    """Cancel ``task`` when the client disconnects; ``stop()`` the result when the request is done.

    Under uvicorn's httptools protocol the connection says so itself
    (``internals.uvicorn_disconnect_hook``: no task, no frame, no future per
    open stream); elsewhere a pending ``receive()`` waits for it.
    """
    hook = uvicorn_disconnect_hook(send, task)
    return hook if hook is not None else DisconnectWatcher(receive, task)


class DisconnectWatcher:
    """Cancels the request's task when the client disconnects.

    Waits on ``receive()`` itself, as a future with a callback, not in a
    coroutine of its own: one frame less for every open stream.
    """

    __slots__ = ("_receive", "_receiving", "_task")

    def __init__(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        self._receive = receive
        self._task = task
        self._receiving: asyncio.Future[Any] | None = None
        self._listen()

    def _listen(self) -> None:
        self._receiving = asyncio.ensure_future(self._receive())
        self._receiving.add_done_callback(self._received)

    def _received(self, receiving: asyncio.Future[Any]) -> None:
        if receiving.cancelled() or self._receiving is None:
            return
        if receiving.exception() is None and receiving.result()["type"] != "http.disconnect":
            self._listen()  # not the end (a late body chunk): listen on
            return
        self._receiving = None
        self._task.cancel()

    def stop(self) -> None:
        """The request is done: stop listening (it is not cancelled any more)."""
        receiving, self._receiving = self._receiving, None
        if receiving is not None:
            receiving.cancel()


def path_info(scope: Scope) -> str:
    """The path Django will resolve: ``ASGIRequest.path_info``, computed the same way."""
    path: str = scope["path"]
    return path.removeprefix(get_script_prefix(scope))


def build_chain(paths: list[str]) -> GetResponse:
    """The middleware chain ``paths`` around the view, built as the middleware protocol documents.

    Only async-capable middleware may be listed (a sync-only one would cost a
    thread trip per request, which is what this chain exists to avoid; system
    check ``events.E008``). ``process_view`` and ``process_exception`` hooks
    are called as Django calls them; ``process_template_response`` is not (the
    event endpoints render no templates).
    """
    view_hooks: list[Callable[..., Awaitable[HttpResponseBase | None]]] = []
    exception_hooks: list[Callable[..., Awaitable[HttpResponseBase | None]]] = []

    async def get_view_response(request: HttpRequest) -> HttpResponseBase:
        if not context_is_empty() and get_urlconf() is not None:
            set_urlconf(None)  # i.e. ROOT_URLCONF (set only if changed: it costs memory per stream)
        match = request.resolver_match
        urlconf = getattr(request, "urlconf", None)
        if urlconf is not None or match is None:
            # A middleware chose another urlconf: resolve again in it.
            set_urlconf(urlconf)
            match = get_resolver(urlconf).resolve(request.path_info)
            request.resolver_match = match
        for hook in view_hooks:
            early = await hook(request, match.func, match.args, match.kwargs)
            if early is not None:
                return early
        try:
            response: HttpResponseBase = await match.func(request, *match.args, **match.kwargs)
        except Exception as exc:
            for hook in exception_hooks:
                handled = await hook(request, exc)
                if handled is not None:
                    return handled
            raise
        if response.status_code >= 400:
            await log_error(response, request.path, request)
        return response

    def as_async(hook: Callable[..., Any]) -> Callable[..., Awaitable[HttpResponseBase | None]]:
        return hook if iscoroutinefunction(hook) else sync_to_async(hook)

    handler: Any = convert_exception_to_response(get_view_response)
    for path in reversed(paths):
        factory = import_string(path)
        if not getattr(factory, "async_capable", False):
            raise ImproperlyConfigured(f"EVENTS['MIDDLEWARE'] lists {path!r}, which is not async-capable.")
        try:
            instance = factory(handler)
        except MiddlewareNotUsed:
            continue
        if hasattr(instance, "process_view"):
            view_hooks.insert(0, as_async(instance.process_view))
        if hasattr(instance, "process_exception"):
            exception_hooks.append(as_async(instance.process_exception))
        handler = convert_exception_to_response(instance)
    chain: GetResponse = handler
    return chain


# The server name (Client) or Host header (AsyncClient) of Django's test clients' requests.
TEST_SERVER_NAME = "testserver"


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
        if TEST_SERVER_NAME in (request.META.get("SERVER_NAME"), request.META.get("HTTP_HOST")):
            # Django's test clients (Client, AsyncClient) are not a server:
            # nothing is missing there, so no warning in every test run.
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
