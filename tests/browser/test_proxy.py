"""The event paths through the shipped nginx config, with a 2 s read timeout.

Heartbeats keep a stream open for several read timeouts; a long-poll is
answered by the app before nginx would give up; and when the upstream fails
(502 while uvicorn restarts, 504 when it hangs) the event paths drop the
connection instead of answering an error status, which a browser's
EventSource would treat as final.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from events import publish
from tests.servers import free_port

from .nginx import Nginx, start_nginx
from .site import HEARTBEAT, LONGPOLL_TIMEOUT, READ_TIMEOUT, DemoSite
from .test_live import tracker, value_of

# Long enough to prove the point: three of nginx's read timeouts.
OUTLAST = 3 * READ_TIMEOUT + HEARTBEAT


def test_stream_outlives_three_read_timeouts(
    nginx: Nginx, site: DemoSite, open_board: Callable[..., Page], topic: str
) -> None:
    page = open_board()
    before = value_of(page, "production-outages")
    url = f"{nginx.url}events/stream/"
    # Each read must bring bytes within the read timeout: heartbeats do.
    timeout = httpx.Timeout(5.0, read=READ_TIMEOUT)
    with httpx.Client(timeout=timeout) as client, client.stream("GET", url, params={"topic": topic}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        # Not compressed: gzip is off on the event paths, and the app says the body is not encoded.
        assert response.headers.get("content-encoding") == "identity"
        chunks = response.iter_raw()
        received = b""
        started = time.monotonic()
        while time.monotonic() - started < OUTLAST:
            received += next(chunks)
        assert received.count(b": heartbeat") >= (OUTLAST / HEARTBEAT) - 3, received

        event_id = publish(topic, {"n": 1})
        while f"id: {event_id}".encode() not in received:
            received += next(chunks)
        assert b"event: invalidate" in received

    # The page, open all along, got through on its first connection too.
    site.manage("bump_tracker", "production-outages")
    expect(tracker(page, "production-outages").locator(".value")).to_have_text(str(before + 1))
    assert page.evaluate("document.body.dataset.connects") == "1"
    assert '" 504 ' not in nginx.access_log()


def test_long_polls_are_answered_before_nginx_times_out(nginx: Nginx, topic: str) -> None:
    url = f"{nginx.url}events/poll/"
    durations = []
    with httpx.Client(timeout=10) as client:
        since = None
        started = time.monotonic()
        while time.monotonic() - started < OUTLAST:
            params = {"topic": topic, **({"since": since} if since else {})}
            asked = time.monotonic()
            response = client.get(url, params=params)
            durations.append(time.monotonic() - asked)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["events"] == []
            since = body["last_id"]

        event_id = publish(topic, {"n": 2})
        response = client.get(url, params={"topic": topic, "since": since})
        assert response.status_code == 200
        assert [event["id"] for event in response.json()["events"]] == [event_id]
    # The app, not nginx, ended every empty wait: just after its own timeout.
    assert all(LONGPOLL_TIMEOUT * 0.9 <= duration < READ_TIMEOUT for duration in durations), durations
    assert '" 504 ' not in nginx.access_log()


@pytest.fixture
def silent_upstream() -> Iterator[int]:
    """A port that accepts connections and never answers: nginx times out reading (504)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def _dropped(url: str) -> bool:
    try:
        response = httpx.get(url, timeout=READ_TIMEOUT + 8)
    except httpx.RemoteProtocolError:
        return True  # closed without an answer: nginx's 444
    raise AssertionError(f"{url}: expected a dropped connection, got {response.status_code}")


@pytest.mark.parametrize("upstream", ["down", "silent"])
def test_upstream_failures_on_event_paths_drop_the_connection(
    upstream: str, site: DemoSite, silent_upstream: int
) -> None:
    port = silent_upstream if upstream == "silent" else free_port()
    proxy = start_nginx(upstream_port=port, static_root=site.static_root, read_timeout=READ_TIMEOUT)
    try:
        assert _dropped(f"{proxy.url}events/stream/?topic=x")
        assert _dropped(f"{proxy.url}events/poll/?topic=x")
        log = proxy.access_log()
        assert log.count('" 444 ') == 2, log  # logged as "closed without a response"
        if upstream == "down":
            # Other pages keep nginx's ordinary error page.
            assert httpx.get(proxy.url, timeout=10).status_code == 502
    finally:
        proxy.stop()
