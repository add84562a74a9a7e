"""Anonymous streams and long-polls on public topics are served without a Django request, as the views serve them."""

import asyncio
import json
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.test import override_settings

from events import publish
from events.serving.public import public_poll, public_stream

from .servers import UvicornServer, metric, wait_for
from .sse import open_stream
from .waits import opened, subscribed

DIRECT = "events_polls_direct_total"
STREAMS_DIRECT = "events_streams_direct_total"


def scope(query: str = "topic=status", method: str = "GET", **headers: str) -> dict[str, Any]:
    fields = {"host": "127.0.0.1:8000", **headers}
    return {
        "type": "http",
        "method": method,
        "path": "/events/poll/",
        "query_string": query.encode(),
        "headers": [(name.replace("_", "-").encode(), value.encode()) for name, value in fields.items()],
    }


def test_an_anonymous_poll_on_public_topics_is_served_directly() -> None:
    assert public_poll(scope("topic=a&topic=b&since=1-0")) == (frozenset({"a", "b"}), "1-0")
    assert public_poll(scope("topic=a&since=")) == (frozenset({"a"}), None)
    # Cookies other than the session's do not matter.
    assert public_poll(scope("topic=a", cookie="csrftoken=x; theme=dark")) == (frozenset({"a"}), None)


@pytest.mark.parametrize(
    "request_scope",
    [
        scope(method="POST"),
        scope(cookie="theme=dark; sessionid=abc"),  # a session: maybe a user, maybe revocable
        scope("topic=user:1"),  # a private topic: the hook must see the user
        scope("topic=status&token=abc"),  # a token: read and checked by the view
        scope("topic=a b"),  # bad input: the view answers the 400
        scope(""),
        scope(host="evil.example"),  # not in ALLOWED_HOSTS: the view answers the 400
        scope(x_forwarded_host="example.com"),
        scope(content_length="5"),
        scope(transfer_encoding="chunked"),
        {**scope(), "headers": []},  # no Host header
        {**scope(), "query_string": b"topic=%ff\xff"},
    ],
)
def test_anything_else_goes_the_usual_way(request_scope: dict[str, Any]) -> None:
    assert public_poll(request_scope) is None
    assert public_stream({**request_scope, "path": "/events/stream/"}) is None


@pytest.mark.parametrize("query", ["topic=a&since=1-0&since=2-0", "topic=a&since=yesterday"])
def test_a_poll_with_a_bad_since_goes_the_usual_way(query: str) -> None:
    assert public_poll(scope(query)) is None


def test_an_anonymous_stream_on_public_topics_is_served_directly() -> None:
    assert public_stream(scope("topic=a")) == (frozenset({"a"}), None, False)
    assert public_stream(scope("topic=a&open_event=1&last_event_id=1-0")) == (frozenset({"a"}), "1-0", True)
    # The header wins over the parameter, as in the view.
    assert public_stream(scope("topic=a&last_event_id=1-0", last_event_id=" 2-0 ")) == (frozenset({"a"}), "2-0", False)


@pytest.mark.parametrize(
    "request_scope",
    [
        scope("topic=a&open_event=maybe"),
        scope("topic=a&last_event_id=1-0&last_event_id=2-0"),
        scope("topic=a", last_event_id="yesterday"),
        {**scope(), "headers": [(b"host", b"127.0.0.1"), (b"last-event-id", b"1-0"), (b"last-event-id", b"2-0")]},
    ],
)
def test_a_stream_with_bad_parameters_goes_the_usual_way(request_scope: dict[str, Any]) -> None:
    assert public_stream(request_scope) is None


@pytest.mark.parametrize(
    "events",
    [
        {"AUTHORIZE": "tests.hooks.deny_secret"},  # site code decides: it gets its request
        {"MIDDLEWARE": None},  # settings.MIDDLEWARE runs for the endpoints
        {"MIDDLEWARE": ["events.middleware.SessionUserMiddleware", "tests.lean_chain.Remember"]},
    ],
)
def test_site_code_for_the_endpoints_sends_every_poll_the_usual_way(events: dict[str, Any]) -> None:
    from django.conf import settings

    with override_settings(EVENTS={**settings.EVENTS, **events}):
        assert public_poll(scope()) is None
        assert public_stream(scope()) is None


def poll_url(server: UvicornServer, topic: str, **params: str) -> str:
    query = "&".join([f"topic={topic}"] + [f"{k}={v}" for k, v in params.items()])
    return f"{server.url}/events/poll/?{query}"


async def get(url: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url, **kwargs)


async def test_the_direct_answer_is_the_views_answer(server: UvicornServer, topic: str) -> None:
    ids = [await asyncio.to_thread(publish, topic, data=i) for i in range(3)]
    before = metric(server, DIRECT)
    direct = await get(poll_url(server, topic, since=ids[0]))
    assert metric(server, DIRECT) == before + 1
    # An X-Forwarded-Host (not trusted here: USE_X_FORWARDED_HOST is off) sends the same poll to the view.
    usual = await get(poll_url(server, topic, since=ids[0]), headers={"X-Forwarded-Host": "elsewhere.example"})
    assert metric(server, DIRECT) == before + 1
    assert direct.status_code == usual.status_code == 200
    assert direct.content == usual.content
    assert [e["id"] for e in direct.json()["events"]] == ids[1:]
    for name in ("content-type", "cache-control"):
        assert direct.headers[name] == usual.headers[name]
    assert direct.headers["content-length"] == str(len(direct.content))


async def test_a_direct_poll_waits_for_the_next_event(server: UvicornServer, topic: str) -> None:
    before = metric(server, DIRECT)
    request = asyncio.create_task(get(poll_url(server, topic)))
    await subscribed(server, topic)
    event_id = await asyncio.to_thread(publish, topic, data="new")
    response = await asyncio.wait_for(request, 5)
    assert response.json() == {
        "events": [{"id": event_id, "topic": topic, "event": "invalidate", "data": "new"}],
        "last_id": event_id,
    }
    assert response.headers["content-length"] == str(len(response.content))
    assert metric(server, DIRECT) == before + 1


async def test_a_direct_poll_whose_client_leaves_leaves_the_hub(server: UvicornServer, topic: str) -> None:
    def polls() -> int:
        return int(httpx.get(f"{server.url}/events/health/", timeout=5).json()["polls"])

    assert await asyncio.to_thread(wait_for, lambda: polls() == 0, 10, "no poll waiting")
    client = socket.create_connection(("127.0.0.1", server.port))
    try:
        client.sendall(f"GET /events/poll/?topic={topic} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await asyncio.to_thread(wait_for, lambda: polls() == 1, 10, "the poll waiting")
    finally:
        client.close()
    await asyncio.to_thread(wait_for, lambda: polls() == 0, 10, "the poll gone with its client")


async def test_refused_polls_get_the_views_errors(
    start_server: Callable[..., UvicornServer], server: UvicornServer
) -> None:
    assert (await get(f"{server.url}/events/poll/?topic=a%20b")).json()["code"] == "invalid_topic"
    bad_host = await get(f"{server.url}/events/poll/?topic=status", headers={"Host": "evil.example"})
    assert bad_host.status_code == 400
    # The hub refuses (its limit, one poll here): the same 503 with Retry-After as the view's.
    full = start_server({"EVENTS_MAX_POLLS": "1"})
    waiting = asyncio.create_task(get(f"{full.url}/events/poll/?topic=status"))
    await asyncio.to_thread(
        wait_for, lambda: httpx.get(f"{full.url}/events/health/", timeout=5).json()["polls"] == 1, 10, "one poll"
    )
    before = metric(full, DIRECT)
    refused = await get(f"{full.url}/events/poll/?topic=status")
    waiting.cancel()
    assert metric(full, DIRECT) == before + 1
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "2"
    assert json.loads(refused.content)["code"] == "unavailable"


def stream_url(server: UvicornServer, topic: str, **params: str) -> str:
    query = "&".join([f"topic={topic}"] + [f"{k}={v}" for k, v in params.items()])
    return f"{server.url}/events/stream/?{query}"


async def test_a_direct_stream_is_the_views_stream(server: UvicornServer, topic: str) -> None:
    before = metric(server, STREAMS_DIRECT)
    async with open_stream(stream_url(server, topic)) as direct:
        assert metric(server, STREAMS_DIRECT) == before + 1
        # An X-Forwarded-Host (not trusted here) sends the same stream to the view.
        async with open_stream(stream_url(server, topic), {"X-Forwarded-Host": "elsewhere.example"}) as usual:
            assert metric(server, STREAMS_DIRECT) == before + 1
            assert direct.response.status_code == usual.response.status_code == 200
            for name in ("content-type", "cache-control", "x-accel-buffering", "content-encoding"):
                assert direct.response.headers[name] == usual.response.headers[name], name
            await opened(direct)
            await opened(usual)
            event_id = await asyncio.to_thread(publish, topic, data="x")
            for stream in (direct, usual):
                event = await stream.next_event()
                assert (event.id, event.json) == (event_id, {"topic": topic, "data": "x"})


async def test_a_direct_stream_resumes_and_announces(server: UvicornServer, topic: str) -> None:
    ids = [await asyncio.to_thread(publish, topic, data=i) for i in range(3)]
    async with open_stream(stream_url(server, topic, open_event="1"), {"Last-Event-ID": ids[0]}) as stream:
        first = await stream.next_event()
        assert (first.event, first.id) == ("open", ids[0])
        assert [e.id for e in await stream.events(2)] == ids[1:]


async def test_a_direct_stream_whose_client_leaves_leaves_the_hub(server: UvicornServer, topic: str) -> None:
    def streams() -> int:
        return int(httpx.get(f"{server.url}/events/health/", timeout=5).json()["streams"])

    before = metric(server, STREAMS_DIRECT)
    async with open_stream(stream_url(server, topic)) as stream:
        await opened(stream)
        assert metric(server, STREAMS_DIRECT) == before + 1
        assert streams() >= 1
    await asyncio.to_thread(wait_for, lambda: streams() == 0, 10, "the stream gone with its client")
