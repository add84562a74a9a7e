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
wraps ``send``, :func:`aborter` returns None and a stuck stream is only
cancelled (its slot is freed; its socket lingers until the client goes).

The events handler (``handlers.py``), which holds the request's ``send``,
gives each stream its aborter.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable
from functools import partial
from typing import Any

from ..internals import uvicorn_transport

logger = logging.getLogger(__name__)

# SO_LINGER on, zero seconds: close() discards unsent data and sends a RST.
_LINGER_ZERO = struct.pack("ii", 1, 0)
# Whether the "cannot abort" warning was logged (once per process).
_warned: list[bool] = []


def aborter(send: object) -> Callable[[], None] | None:
    """A function that aborts the connection under the server's ASGI ``send``, or None if it cannot."""
    transport: Any = uvicorn_transport(send)
    if not callable(getattr(transport, "abort", None)) or not callable(getattr(transport, "get_extra_info", None)):
        if not _warned:
            _warned.append(True)
            logger.warning(
                "events: cannot find the connection under %r; streams whose client stopped reading "
                "will be cancelled but their sockets not aborted (see events/transport.py)",
                send,
            )
        return None
    return partial(abort, transport)


def abort(transport: asyncio.WriteTransport) -> None:
    """Close ``transport`` at once, discarding what is queued (RST), freeing its buffers."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        except OSError:
            pass  # already closed
    transport.abort()
