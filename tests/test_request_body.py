"""The event endpoints refuse a request body before reading a byte of it (a JSON 400)."""

from __future__ import annotations

import asyncio
import json

import pytest

from events import apublish

from .servers import UvicornServer


async def raw_request(server: UvicornServer, head: str) -> bytes:
    """Send ``head`` (request line and headers, no body) and read the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n")
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


@pytest.mark.parametrize("path", ["/events/stream/", "/events/poll/"])
@pytest.mark.parametrize("header", ["Content-Length: 2147483648", "Transfer-Encoding: chunked"])
async def test_a_body_is_refused_before_it_is_read(server: UvicornServer, topic: str, path: str, header: str) -> None:
    # The body is announced and never sent: an answer proves it was not waited for.
    answer = await raw_request(server, f"GET {path}?topic={topic} HTTP/1.1\nHost: x\n{header}\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), answer
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body) == {"error": "The event endpoints take no request body.", "code": "body_not_allowed"}


async def test_an_empty_body_is_fine(server: UvicornServer, topic: str) -> None:
    since = await apublish(topic)
    await apublish(topic)
    answer = await raw_request(
        server,
        f"GET /events/poll/?topic={topic}&since={since} HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 0\nConnection: close\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer
