"""What events/internals.py relies on, checked against the installed Django, uvicorn and asyncio.

Each test names the item it checks, so a release that changes one fails here
first, with the name, instead of somewhere deep in a stream.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from asgiref.sync import markcoroutinefunction
from django.core.handlers import asgi as django_asgi
from django.core.handlers.asgi import ASGIHandler

from events.core.messages import http_chunk
from events.internals import (
    DJANGO_HANDLER_METHODS,
    DisconnectHook,
    PendingSend,
    context_is_empty,
    receivers_among,
    request_finished_stock_receivers,
    start_coroutine,
    sync_receivers,
    uvicorn_disconnect_hook,
    uvicorn_raw_writer,
    uvicorn_transport,
)

from .servers import free_port

# The parameters handlers.py passes to each method, in order.
EXPECTED_PARAMETERS = {
    "create_request": ["scope", "body_file"],
    "get_response_async": ["request"],
    "send_response": ["response", "send"],
}


@pytest.mark.parametrize("name", DJANGO_HANDLER_METHODS)
def test_django_asgi_handler_still_has_the_method(name: str) -> None:
    method = getattr(ASGIHandler, name, None)
    assert method is not None, f"django ASGIHandler.{name} is gone: update events/serving/handlers.py and internals.py"
    parameters = [p for p in inspect.signature(method).parameters if p != "self"]
    assert parameters == EXPECTED_PARAMETERS[name], (
        f"django ASGIHandler.{name} now takes {parameters}, handlers.py passes {EXPECTED_PARAMETERS[name]}"
    )
    if name != "create_request":
        assert inspect.iscoroutinefunction(method), f"django ASGIHandler.{name} is no longer async"


def test_django_get_script_prefix_is_still_a_module_function() -> None:
    function = getattr(django_asgi, "get_script_prefix", None)
    assert callable(function), "django.core.handlers.asgi.get_script_prefix is gone: update events/serving/handlers.py"
    assert function({"root_path": "/prefix"}) == "/prefix"


def test_every_method_listed_is_checked() -> None:
    assert set(DJANGO_HANDLER_METHODS) == set(EXPECTED_PARAMETERS)


# asyncio: a coroutine stepped by hand ------------------------------------


async def test_start_coroutine_runs_a_coroutine_that_does_not_suspend_to_the_end() -> None:
    done: list[int] = []

    async def quick() -> None:
        done.append(1)

    assert start_coroutine(quick()) is None
    assert done == [1]


async def test_start_coroutine_returns_what_finishes_a_suspended_coroutine() -> None:
    gate = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def slow() -> None:
        steps.append("started")
        steps.append(await gate)

    pending = start_coroutine(slow())
    assert isinstance(pending, PendingSend), "asyncio: a suspended coroutine no longer yields a future"
    assert steps == ["started"]
    asyncio.get_running_loop().call_soon(gate.set_result, "resumed")
    await asyncio.wait_for(pending, 5)
    assert steps == ["started", "resumed"]


async def test_a_cancelled_wait_runs_the_coroutine_cleanup() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    cleaned: list[bool] = []

    async def slow() -> None:
        try:
            await gate
        finally:
            cleaned.append(True)

    pending = start_coroutine(slow())
    assert pending is not None

    async def finish() -> None:
        await pending

    task = asyncio.ensure_future(finish())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]
    assert gate.cancelled()


async def test_an_error_in_the_first_step_propagates() -> None:
    async def broken() -> None:
        raise OSError("boom")

    with pytest.raises(OSError, match="boom"):
        start_coroutine(broken())


# uvicorn: a body send to a socket that is not paused does not suspend -------

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def read_to_the_last_chunk(client: socket.socket) -> bytes:
    """Everything ``client`` receives up to the chunked body's last chunk."""
    loop = asyncio.get_running_loop()
    received = b""
    while not received.endswith(b"0\r\n\r\n"):
        data = await asyncio.wait_for(loop.sock_recv(client, 1 << 20), 10)
        assert data, "connection closed early"
        received += data
    return received


@asynccontextmanager
async def slow_reader_of(app: Any, http: str = "auto") -> AsyncIterator[socket.socket]:
    """``app`` served by an in-process uvicorn; a client socket with a 4 KB receive buffer that has sent a GET."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", http=http)
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(client, ("127.0.0.1", port))
        await loop.sock_sendall(client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


async def test_uvicorn_send_completes_without_suspending_until_the_client_stops_reading() -> None:
    """uvicorn RequestResponseCycle.send: no await unless the transport is paused (internals item 3)."""
    outcomes: list[bool] = []  # per chunk: completed in its first step
    finished = asyncio.Event()
    chunk = b"x" * 65536

    transports: list[object] = []

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            return
        transports.append(uvicorn_transport(send))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for _ in range(2000):  # up to 128 MB: far beyond any socket buffer
            pending = start_coroutine(send({"type": "http.response.body", "body": chunk, "more_body": True}))
            outcomes.append(pending is None)
            if pending is not None:
                await pending  # finishes once the client reads again
                break
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        finished.set()

    async with slow_reader_of(app) as client:
        # Read nothing until the server had to wait for us.
        for _ in range(1000):
            if outcomes and not outcomes[-1]:
                break
            await asyncio.sleep(0.01)
        assert outcomes[0], "uvicorn: a body send to a socket that is not paused suspended"
        assert isinstance(transports[0], asyncio.Transport), (
            "uvicorn: send.__self__.transport is no longer the connection's transport (events/internals.py item 4)"
        )
        assert not outcomes[-1], "uvicorn: a send never suspended although the client reads nothing"
        # Now read everything: the suspended send finishes and the response ends.
        await read_to_the_last_chunk(client)
        await asyncio.wait_for(finished.wait(), 10)


# uvicorn: only its own send gives a transport (item 4) ---------------------


def test_a_send_that_is_not_uvicorns_gives_no_transport() -> None:
    class Cycle:  # has a transport, but is not uvicorn's RequestResponseCycle
        transport = object()

        async def send(self, message: MutableMapping[str, Any]) -> None:
            pass

    async def wrapped_send(message: MutableMapping[str, Any]) -> None:
        pass

    assert uvicorn_transport(Cycle().send) is None
    assert uvicorn_transport(wrapped_send) is None


# uvicorn httptools: a raw chunk write is what send writes (item 13) ---------


def decode_chunked(data: bytes) -> bytes:
    """The body of an HTTP/1.1 chunked response body (after the headers), checking the framing."""
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        assert data[size : size + 2] == b"\r\n", "chunk not followed by CRLF"
        if size == 0:
            return body
        body, data = body + data[:size], data[size + 2 :]


@pytest.mark.parametrize("http", ["httptools", "h11"])
async def test_uvicorn_raw_writer_writes_what_send_would_and_yields_while_paused(http: str) -> None:
    """httptools: raw chunks interleave with send's; refused while uvicorn's flow control pauses (item 13)."""
    writers: list[object] = []
    paused_after: list[int] = []
    finished = asyncio.Event()
    big = b"y" * 65536

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        writer = uvicorn_raw_writer(send)
        writers.append(writer)
        if writer is not None:
            await send({"type": "http.response.body", "body": b"first,", "more_body": True})
            assert writer.try_write(http_chunk(b"second,"))
            for count in range(2000):  # up to 128 MB: far beyond any socket buffer
                if not writer.try_write(http_chunk(big)):
                    paused_after.append(count)
                    break
        await send({"type": "http.response.body", "body": b"last", "more_body": False})
        finished.set()

    async with slow_reader_of(app, http) as client:
        for _ in range(1000):
            if writers and (writers[0] is None or paused_after):
                break
            await asyncio.sleep(0.01)
        if http == "h11":
            assert writers == [None], "uvicorn h11: raw writes must not be offered (h11 frames the body itself)"
        else:
            assert writers[0] is not None, "uvicorn httptools: no raw writer (events/internals.py item 13)"
            assert paused_after, "uvicorn httptools: raw writes never refused although the client reads nothing"
        received = await read_to_the_last_chunk(client)
        await asyncio.wait_for(finished.wait(), 10)
        head, _, body = received.partition(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        expected = b"first,second," + big * paused_after[0] + b"last" if http == "httptools" else b"last"
        assert decode_chunked(body) == expected, "raw chunks and send's do not make one well-framed body"


def test_no_raw_writer_for_a_send_that_is_not_uvicorns() -> None:
    async def wrapped_send(message: MutableMapping[str, Any]) -> None:
        pass

    assert uvicorn_raw_writer(wrapped_send) is None


# uvicorn httptools: a disconnect sets message_event (item 14) --------------


@pytest.mark.parametrize("http", ["httptools", "h11"])
async def test_uvicorn_disconnect_hook_cancels_the_request_when_the_client_goes(http: str) -> None:
    """httptools: the hook stands in for message_event and a disconnect cancels the task (item 14)."""
    hooks: list[object] = []
    cancelled = asyncio.Event()
    waiting = asyncio.Event()

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            return
        assert (await receive())["type"] == "http.request"
        task = asyncio.current_task()
        assert task is not None
        hook = uvicorn_disconnect_hook(send, task)
        hooks.append(hook)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"open", "more_body": True})
        try:
            waiting.set()
            if hook is None:
                await receive()  # h11: the portable way
                raise asyncio.CancelledError
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with slow_reader_of(app, http) as client:
        await asyncio.wait_for(waiting.wait(), 10)
        if http == "h11":
            assert hooks == [None], "uvicorn h11: the disconnect hook must not be offered"
        else:
            assert isinstance(hooks[0], DisconnectHook), "uvicorn httptools: no disconnect hook (internals.py item 14)"
        client.close()
        try:
            await asyncio.wait_for(cancelled.wait(), 10)
        except TimeoutError:
            raise AssertionError(
                "uvicorn: a client's disconnect no longer reaches cycle.message_event.set() (internals.py item 14)"
            ) from None


async def test_the_disconnect_hook_still_behaves_as_an_event() -> None:
    """Anyone still calling uvicorn's receive() waits on the hook as on the Event it replaced."""

    class Cycle:
        disconnected = False

    task = asyncio.ensure_future(asyncio.sleep(30))
    try:
        hook = DisconnectHook(Cycle(), task, False)
        waiter = asyncio.ensure_future(hook.wait())
        await asyncio.sleep(0)
        assert not waiter.done() and not hook.is_set()
        hook.set()  # not a disconnect: the response completed, say
        assert await asyncio.wait_for(waiter, 5) is True
        assert hook.is_set() and not task.cancelled()
        hook.clear()
        assert not hook.is_set()
        hook.stop()
        # The cycle holds the hook: no reference back, so no cycle for the collector.
        assert hook.cycle is None and hook.task is None
        hook.set()  # a late disconnect, after the request: nothing to cancel
        assert not task.cancelled()
    finally:
        task.cancel()


# Django: a signal's live receivers (item 15) --------------------------------


def test_sync_receivers_are_what_a_send_calls() -> None:
    from django.dispatch import Signal

    signal = Signal()

    def sync_receiver(**kwargs: object) -> None:
        pass

    async def async_receiver(**kwargs: object) -> None:
        pass

    assert sync_receivers(signal, None) == []
    signal.connect(sync_receiver)
    assert sync_receivers(signal, None) == [sync_receiver], (
        "Django's Signal._live_receivers changed (internals item 15)"
    )
    signal.connect(async_receiver)
    assert sync_receivers(signal, None) is None, "Django's Signal._live_receivers changed (internals item 15)"


def test_receivers_among_sees_connect_disconnect_and_a_dying_receiver() -> None:
    import gc

    from django.dispatch import Signal

    signal = Signal()

    def first(**kwargs: object) -> None:
        pass

    def make_receiver() -> Callable[..., None]:
        def receiver(**kwargs: object) -> None:
            pass

        return receiver

    def async_receiver(**kwargs: object) -> Awaitable[None]:
        return asyncio.sleep(0)

    allowed = (first,)
    assert receivers_among(signal, None, allowed)
    assert receivers_among(signal, None, allowed), "asked again"
    signal.connect(first)
    assert receivers_among(signal, None, allowed)
    dying = make_receiver()
    signal.connect(dying)  # weakly held: the verdict must not keep it alive
    assert not receivers_among(signal, None, allowed)
    del dying
    gc.collect()
    assert receivers_among(signal, None, allowed), "a dead receiver went unseen (Signal._dead_receivers, item 15)"
    other = make_receiver()
    signal.connect(other)
    assert not receivers_among(signal, None, allowed), "a connect went unseen (Signal.receivers, item 15)"
    signal.disconnect(other)
    assert receivers_among(signal, None, allowed), "a disconnect went unseen (Signal.receivers, item 15)"
    # The same length, another receiver in its place.
    signal.disconnect(first)
    signal.connect(other)
    assert not receivers_among(signal, None, allowed)
    assert receivers_among(signal, None, (other,))
    signal.connect(markcoroutinefunction(async_receiver))
    assert not receivers_among(signal, None, (other, async_receiver)), "async receivers are never idle"


def test_django_still_connects_its_stock_request_finished_receivers() -> None:
    from django.core import signals
    from django.core.handlers.asgi import ASGIHandler

    stock = request_finished_stock_receivers()
    receivers = sync_receivers(signals.request_finished, ASGIHandler)
    assert receivers is not None and set(stock) <= set(receivers), (
        "Django no longer connects close_old_connections, close_caches and reset_urlconf to "
        "request_finished (internals item 16): update sync_trips.py"
    )


# hypercorn: the shutdown event of a worker process (item 5) ---------------


def test_hypercorn_still_passes_its_workers_the_shutdown_event_as_a_keyword() -> None:
    import multiprocessing

    from hypercorn import run as hypercorn_run

    source = inspect.getsource(hypercorn_run._populate)
    assert '"shutdown_event": shutdown_event' in source, (
        "hypercorn no longer passes shutdown_event to its workers: update events.internals.hypercorn_shutdown_event"
    )

    def target() -> None:
        pass

    process = multiprocessing.get_context("spawn").Process(target=target, kwargs={"shutdown_event": 1})
    assert getattr(process, "_target", None) is target, "multiprocessing.Process no longer keeps _target"
    assert getattr(process, "_kwargs", None) == {"shutdown_event": 1}, "multiprocessing.Process no longer keeps _kwargs"


def test_outside_a_hypercorn_worker_there_is_no_shutdown_event() -> None:
    from events.internals import hypercorn_shutdown_event

    assert hypercorn_shutdown_event() is None


# Django: functions and a descriptor the events endpoints use (items 6-9) -----


async def test_django_convert_exception_to_response_turns_an_exception_into_django_s_response() -> None:
    from django.core.handlers.exception import convert_exception_to_response
    from django.http import Http404
    from django.test import RequestFactory

    async def raises(request: Any) -> Any:
        raise Http404("gone")

    wrapped = convert_exception_to_response(raises)
    assert inspect.iscoroutinefunction(wrapped), "item 6: convert_exception_to_response no longer keeps async"
    response = await wrapped(RequestFactory().get("/x"))
    assert response.status_code == 404, "item 6: convert_exception_to_response no longer answers Http404 with 404"


def test_django_log_response_still_takes_what_handlers_py_passes() -> None:
    from django.utils.log import log_response

    parameters = inspect.signature(log_response).parameters
    assert {"response", "request"} <= set(parameters), f"item 7: log_response now takes {list(parameters)}"


def test_django_auth_middleware_still_has_auser_and_get_user() -> None:
    from django.contrib.auth import middleware

    assert inspect.iscoroutinefunction(middleware.auser), "item 8: django.contrib.auth.middleware.auser changed"
    assert list(inspect.signature(middleware.auser).parameters) == ["request"]
    assert list(inspect.signature(middleware.get_user).parameters) == ["request"], "item 8: get_user changed"


def test_django_streaming_content_is_still_a_property_with_a_setter() -> None:
    from django.http import StreamingHttpResponse

    descriptor = vars(StreamingHttpResponse).get("streaming_content")
    assert isinstance(descriptor, property) and descriptor.fset is not None, (
        "item 9: StreamingHttpResponse.streaming_content is no longer a property with a setter: update direct.py"
    )


# uvicorn: signal handlers before lifespan start-up (item 10) ------------------

_SIGNALS_AT_STARTUP = """
import asyncio, signal, sys
import uvicorn
from asgiref.sync import markcoroutinefunction

seen = {}

async def app(scope, receive, send):
    assert scope["type"] == "lifespan"
    await receive()
    seen["handler"] = signal.getsignal(signal.SIGTERM)
    await send({"type": "lifespan.startup.complete"})
    await receive()
    await send({"type": "lifespan.shutdown.complete"})

server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]), lifespan="on", log_level="warning"))

async def main():
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    server.should_exit = True
    await task

asyncio.run(main())
handler = seen["handler"]
print(getattr(handler, "__self__", None) is server)
"""


def test_uvicorn_installs_its_signal_handlers_before_lifespan_startup() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _SIGNALS_AT_STARTUP, str(free_port())], capture_output=True, timeout=30, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True", (
        "item 10: at lifespan start-up SIGTERM's handler is not uvicorn's: asgi.py's chaining would replace it"
    )


# redis-py: pool internals (item 11) ------------------------------------------


async def test_redis_py_pools_still_expose_what_redis_url_py_reads() -> None:
    import redis.asyncio
    import redis.asyncio.sentinel

    pool = redis.asyncio.Redis(host="127.0.0.1", port=free_port()).connection_pool
    assert isinstance(pool.connection_class, type), "item 11: a pool's connection_class is gone"
    assert pool.connection_kwargs.get("host") == "127.0.0.1", "item 11: a pool's connection_kwargs changed"
    bounded = redis.asyncio.BlockingConnectionPool(connection_class=pool.connection_class, **pool.connection_kwargs)
    client = redis.asyncio.Redis.from_pool(bounded)
    assert client.connection_pool is bounded
    await client.aclose()

    manager = redis.asyncio.sentinel.Sentinel([("127.0.0.1", free_port())])  # type: ignore[no-untyped-call]
    sentinel_pool = manager.master_for("mymaster").connection_pool
    assert isinstance(sentinel_pool, redis.asyncio.sentinel.SentinelConnectionPool)
    assert sentinel_pool.sentinel_manager is manager, "item 11: a Sentinel pool's sentinel_manager is gone"
    await manager.aclose()


# Django: the timestamp of a signed value (item 12) ------------------------


def test_item_12_the_timestamp_of_a_signed_value_is_where_django_puts_it() -> None:
    import time
    from unittest import mock

    from django.core import signing

    from events.internals import signed_timestamp

    at = int(time.time()) - 1234
    with mock.patch("time.time", return_value=at + 0.5):
        value = signing.dumps(["a", "b"], salt="x", compress=True)
    assert signing.loads(value, salt="x") == ["a", "b"]
    assert signed_timestamp(value) == at, "django.core.signing changed its layout: update events/internals.py"


# asgiref: a Local's values are context variables (item 17) -------------------


@pytest.mark.parametrize("setting", ["urlconf", "script prefix", "cache"])
def test_a_value_djangos_request_finished_resets_is_a_context_variable(setting: str) -> None:
    import contextvars

    from django.core.cache import caches
    from django.urls import set_script_prefix, set_urlconf

    def set_and_look() -> tuple[bool, bool]:
        before = context_is_empty()
        if setting == "urlconf":
            set_urlconf("project.urls")
        elif setting == "script prefix":
            set_script_prefix("/sub/")
        else:
            caches["default"]  # initializes it in this context
        return before, context_is_empty()

    assert contextvars.Context().run(set_and_look) == (True, False), (
        f"setting the {setting} set no context variable: asgiref's Local changed (internals item 17)"
    )
