"""Aborting the TCP connection under a stream: the one thing ASGI gives no way to do.

A client that stops reading leaves its stream blocked in ``send()``. Ending
the stream (the write timeout) is not enough: the server then closes the
connection gracefully, and a graceful close waits to flush what is queued to
a peer that never reads, so the socket, its buffers (megabytes per socket in
the kernel) and its file descriptor stay until the client goes away.
Aborting frees them at once: ``SO_LINGER`` 0 makes the kernel drop the queued
bytes and answer with a RST, then ``transport.abort()`` closes the socket.

ASGI hands the application no transport, and uvicorn offers no extension for
it, so the transport is found through uvicorn's internals:
:func:`events.internals.uvicorn_transport` (two accesses, explained there).
``tests/test_internals.py`` and ``tests/test_hostile.py`` fail loudly if a
uvicorn release changes either. Under another server, or when a middleware
wraps ``send``, :func:`aborter` returns None: the request takes the plain
path (no direct writes either), and a stuck stream is only cancelled (its
slot is freed; its socket lingers until the client goes).

The events handler (``handlers.py``), which holds the request's ``send``,
gives each stream its aborter.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import Any

from ..internals import uvicorn_transport

# SO_LINGER on, zero seconds: close() discards unsent data and sends a RST.
_LINGER_ZERO = struct.pack("ii", 1, 0)


def aborter(send: object) -> Callable[[], None] | None:
    """A function that aborts the connection under the server's ASGI ``send``, or None if it cannot.

    None is normal, not a fault: under another server (granian, hypercorn,
    daphne), or when an ASGI middleware wraps ``send``, the request takes the
    plain path (no direct writes, no abort; see ``handlers.py``).
    """
    transport: Any = uvicorn_transport(send)
    if not callable(getattr(transport, "abort", None)) or not callable(getattr(transport, "get_extra_info", None)):
        return None
    return Aborter(transport)


class Aborter:
    """``abort(transport)`` as a callable that every open stream keeps (smaller than a ``partial``)."""

    __slots__ = ("transport",)

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport

    def __call__(self) -> None:
        abort(self.transport)


def abort(transport: asyncio.WriteTransport) -> None:
    """Close ``transport`` at once, discarding what is queued (RST), freeing its buffers."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        except OSError:
            pass  # already closed
    transport.abort()
