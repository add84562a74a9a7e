"""What events/internals.py relies on, checked against the installed Django, uvicorn and asyncio.

Each test names the item it checks, so a release that changes one fails here
first, with the name, instead of somewhere deep in a stream.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import pytest
import uvicorn
from django.core.handlers import asgi as django_asgi
from django.core.handlers.asgi import ASGIHandler

from events.internals import DJANGO_HANDLER_METHODS, PendingSend, start_coroutine, uvicorn_transport

from .servers import free_port

# The parameters handlers.py passes to each method, in order.
EXPECTED_PARAMETERS = {
    "read_body": ["receive"],
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

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
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
        received = b""
        while not received.endswith(b"0\r\n\r\n"):
            data = await asyncio.wait_for(loop.sock_recv(client, 1 << 20), 10)
            assert data, "connection closed early"
            received += data
        await asyncio.wait_for(finished.wait(), 10)
        client.close()
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


def test_item_5_the_timestamp_of_a_signed_value_is_where_django_puts_it() -> None:
    import time
    from unittest import mock

    from django.core import signing

    from events.internals import signed_timestamp

    at = int(time.time()) - 1234
    with mock.patch("time.time", return_value=at + 0.5):
        value = signing.dumps(["a", "b"], salt="x", compress=True)
    assert signing.loads(value, salt="x") == ["a", "b"]
    assert signed_timestamp(value) == at, "django.core.signing changed its layout: update events/internals.py"
