"""Middleware that rewrites response bodies, in front of the stream on a real uvicorn.

The server runs ``tests.settings_stack``: ``EVENTS["MIDDLEWARE"]`` at its
default (``None``), so the stream goes through the site's whole
``settings.MIDDLEWARE``, with Django's ``GZipMiddleware`` and a middleware
that wraps streaming bodies.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis

from events import publish
from events.backends.connection import channel_name

from .conftest import SERVER_ENV
from .hooks import StreamTagMiddleware
from .servers import UvicornServer, start_uvicorn, wait_for

SETTINGS = "tests.settings_stack"


@pytest.fixture(scope="module")
def stack_server(redis_url: str, events_prefix: str) -> Iterator[UvicornServer]:
    env = {"REDIS_URL": redis_url, "EVENTS_PREFIX": events_prefix, **SERVER_ENV, "DJANGO_SETTINGS_MODULE": SETTINGS}
    with start_uvicorn(env) as srv:
        yield srv


def subscribers(server: UvicornServer, topic: str) -> int:
    with redis.Redis.from_url(server.env["REDIS_URL"]) as client:
        [(_, count)] = client.pubsub_numsub(channel_name(topic, server.env["EVENTS_PREFIX"]))
        return int(count)


async def read_until(chunks: AsyncIterator[bytes], body: bytearray, marker: bytes) -> None:
    while marker not in body:
        body += await anext(chunks)


async def test_gzip_middleware_leaves_the_stream_readable_and_prompt(stack_server: UvicornServer, topic: str) -> None:
    url = f"{stack_server.url}/events/stream/?topic={topic}"
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=5.0)) as client,
        client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as response,
    ):
        assert response.headers["content-type"] == "text/event-stream"
        # Not compressed: GZipMiddleware skips a response that has a Content-Encoding.
        assert response.headers["content-encoding"] == "identity"
        body = bytearray()
        chunks = response.aiter_bytes()  # decodes what Content-Encoding says
        await read_until(chunks, body, b": stream open")
        wait_for(lambda: subscribers(stack_server, topic) == 1, 10, "the stream's subscription")
        first, second = await asyncio.to_thread(publish, topic, data=1), await asyncio.to_thread(publish, topic, data=2)
        # Each event arrives at once (the read timeout is 5 s, the heartbeat 0.2 s).
        await read_until(chunks, body, f"id: {first}\n".encode())
        await read_until(chunks, body, f"id: {second}\n".encode())


async def test_a_middleware_that_replaces_streaming_content_is_honoured(
    stack_server: UvicornServer, topic: str
) -> None:
    url = f"{stack_server.url}/events/stream/?topic={topic}"
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=5.0)) as client:
        async with client.stream("GET", url) as response:
            body = bytearray()
            chunks = response.aiter_bytes()
            await read_until(chunks, body, b": stream open")
            await read_until(chunks, body, StreamTagMiddleware.TAG)
            wait_for(lambda: subscribers(stack_server, topic) == 1, 10, "the stream's subscription")
            event_id = await asyncio.to_thread(publish, topic)
            await read_until(chunks, body, f"id: {event_id}\n".encode())
            assert body.count(StreamTagMiddleware.TAG) >= 2
    # The client went away: the stream behind the middleware's wrapper is closed
    # and its subscription released.
    wait_for(lambda: subscribers(stack_server, topic) == 0, 10, "the subscription to be released")


async def test_gzip_middleware_still_compresses_long_polls(stack_server: UvicornServer, topic: str) -> None:
    for n in range(5):
        await asyncio.to_thread(publish, topic, data={"n": n, "padding": "x" * 100})
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            f"{stack_server.url}/events/poll/?topic={topic}&since=0-0", headers={"Accept-Encoding": "gzip"}
        )
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert len(response.json()["events"]) == 5
