"""The JS client (events/static/events/client.js) in Chromium, against the real server through nginx.

Each test opens the demo board (which loads the client) and makes its own
subscription on a topic of its own. Failures are made with Playwright's
request routing; the times of connection attempts are recorded in the page
(``performance.now()``), so the backoff is measured where it happens.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, Route

from events import publish
from tests.servers import wait_for

from .nginx import Nginx

# Records every EventSource and fetch the page makes, with its time.
RECORD_ATTEMPTS = """() => {
  window.attempts = [];
  const record = (kind, url) => window.attempts.push({ kind, url: String(url), at: performance.now() });
  if (window.EventSource) {
    const RealEventSource = window.EventSource;
    window.EventSource = class extends RealEventSource {
      constructor(url, init) { super(url, init); record("stream", url); }
    };
  }
  const realFetch = window.fetch.bind(window);
  window.fetch = (url, init) => { record("poll", url); return realFetch(url, init); };
}"""

SUBSCRIBE = """([topic, options]) => {
  const config = LiveEvents.config();
  const probe = { events: [], resets: [], errors: [], states: [] };
  window.probe = probe;
  probe.sub = LiveEvents.subscribe(options.noStream ? null : config.streamUrl, [topic], (e) => probe.events.push(e),
    Object.assign({
      // A connection of its own, as the demo's subscription in the page would
      // otherwise share it: these tests are about one connection's transport
      // (sharing is tested in test_sharing.py).
      share: false,
      pollUrl: config.pollUrl,
      onReset: (e) => probe.resets.push(e),
      onError: (e) => probe.errors.push({ message: e.message, status: e.status }),
      onStateChange: (state) => probe.states.push(state),
    }, options));
}"""


def subscribe(page: Page, topic: str, **options: Any) -> None:
    """Subscribe the page to ``topic``, resuming after a marker event published now.

    Like the demo page, which renders the newest id: without an id to resume
    from, a subscription starts "from now" at the moment its request reaches
    the server, and a test publishing right after subscribing could race it.
    """
    options.setdefault("lastEventId", publish(topic, {"marker": True}))
    page.evaluate(RECORD_ATTEMPTS)
    page.evaluate(SUBSCRIBE, [topic, options])


def attempts(page: Page, topic: str, kind: str) -> list[float]:
    """Times (ms) at which the page tried to reach ``topic`` over ``kind`` ("stream" or "poll")."""
    query = urlencode({"topic": topic})
    return [a["at"] for a in page.evaluate("window.attempts") if a["kind"] == kind and query in a["url"]]


def wait_until(page: Page, condition: str, timeout: float = 15_000) -> Any:
    return page.wait_for_function(condition, timeout=timeout).json_value()


def only(topic: str, path: str) -> Callable[[str], bool]:
    query = urlencode({"topic": topic})
    return lambda url: path in url and query in url


def test_backoff_delays_are_capped_and_jittered(open_board: Callable[..., Page]) -> None:
    page = open_board()
    samples = page.evaluate("""() => {
      const out = [];
      for (let failures = 1; failures <= 10; failures++)
        for (let i = 0; i < 40; i++)
          out.push([failures, LiveEvents.backoffDelay(failures, { minDelay: 1000, maxDelay: 30000 })]);
      return out;
    }""")
    for failures, delay in samples:
        ceiling = min(30000, 1000 * 2 ** (failures - 1))
        assert ceiling / 2 <= delay <= ceiling, (failures, delay)
    assert len({delay for failures, delay in samples if failures == 10}) > 30  # jittered, even at the cap


def test_composite_ids_of_a_redis_cluster_compare_per_slot_group(open_board: Callable[..., Page]) -> None:
    """Dropping repeats and merging tabs' positions work on composite ids too (README, Redis Cluster)."""
    from events.cluster.positions import format_positions

    x = 1795823576898
    a = format_positions({5: (x, 0), 70: (x - 5000, 2)})
    ahead = format_positions({5: (x + 1, 0), 70: (x - 5000, 2)})
    other = format_positions({6: (x - 2, 0), 70: (x - 6000, 0)})
    page = open_board()
    got = page.evaluate(
        """([a, ahead, other]) => [
          LiveEvents.compareIds(a, a), LiveEvents.compareIds(ahead, a), LiveEvents.compareIds(a, ahead),
          LiveEvents.compareIds(other, a), LiveEvents.olderId(a, ahead), LiveEvents.olderId(ahead, other),
          LiveEvents.compareIds("1700000000000-1", "1700000000000-0"),
        ]""",
        [a, ahead, other],
    )
    # Behind in group 70 only where both name it; the oldest of each group, union of groups.
    merged = format_positions({5: (x + 1, 0), 6: (x - 2, 0), 70: (x - 6000, 0)})
    assert got == [0, 1, -1, -1, a, merged, 1]


def test_a_stream_that_keeps_failing_falls_back_to_long_poll(open_board: Callable[..., Page], topic: str) -> None:
    page = open_board()
    page.route(only(topic, "/events/stream/"), lambda route: route.abort())
    subscribe(page, topic, minDelay=200, maxDelay=800, fallbackAfter=3)
    wait_until(page, "probe.sub.state === 'polling'")
    streams = attempts(page, topic, "stream")
    assert len(streams) == 3
    # Waits between attempts grow: at least half of 200 ms, then of 400 ms.
    gaps = [b - a for a, b in itertools.pairwise(streams)]
    assert gaps[0] >= 100 and gaps[1] >= 200, gaps
    assert "reconnecting" in page.evaluate("probe.states")

    event_id = publish(topic, {"via": "poll"})
    event = wait_until(page, "probe.events.length === 1 && probe.events[0]")
    assert event == {"id": event_id, "topic": topic, "event": "invalidate", "data": {"via": "poll"}}
    assert page.evaluate("probe.sub.transport") == "poll"


def test_a_server_that_is_down_is_not_hammered(open_board: Callable[..., Page], topic: str) -> None:
    page = open_board()
    page.route(only(topic, "/events/"), lambda route: route.abort())
    subscribe(page, topic, minDelay=200, maxDelay=800, fallbackAfter=2)
    wait_until(page, f"window.attempts.filter((a) => a.url.includes('topic={topic}')).length >= 9")
    assert page.evaluate("probe.sub.state") == "reconnecting"
    polls = attempts(page, topic, "poll")
    # Exponential from 200 ms, capped at 800 ms, half of each delay random.
    for failures, (a, b) in enumerate(itertools.pairwise(polls), start=1):
        ceiling = min(800, 200 * 2 ** (failures - 1))
        assert ceiling / 2 - 5 <= b - a <= ceiling + 1500, (failures, b - a)

    page.evaluate("probe.sub.unsubscribe()")
    assert page.evaluate("probe.sub.state") == "closed"


def test_retry_after_of_a_503_is_honoured(open_board: Callable[..., Page], topic: str) -> None:
    page = open_board()
    answered: list[str] = []

    def unavailable_once(route: Route) -> None:
        if answered:
            route.continue_()
            return
        answered.append(route.request.url)
        route.fulfill(status=503, headers={"Retry-After": "1"}, json={"error": "busy", "code": "unavailable"})

    page.route(only(topic, "/events/poll/"), unavailable_once)
    subscribe(page, topic, noStream=True, minDelay=100)
    wait_until(page, "probe.sub.state === 'polling' && probe.states.includes('reconnecting')")
    first, second = attempts(page, topic, "poll")[:2]
    assert second - first >= 1000


def test_a_long_poll_is_aborted_after_poll_timeout(open_board: Callable[..., Page], topic: str) -> None:
    page = open_board()
    held: list[Route] = []

    def hold_first(route: Route) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)  # never answered, like a hung proxy

    page.route(only(topic, "/events/poll/"), hold_first)
    try:
        subscribe(page, topic, noStream=True, pollTimeout=600, minDelay=100)
        wait_until(page, f"window.attempts.filter((a) => a.url.includes('topic={topic}')).length >= 2")
        first, second = attempts(page, topic, "poll")[:2]
        assert second - first >= 600
        event_id = publish(topic)
        assert wait_until(page, "probe.events.length === 1 && probe.events[0].id") == event_id
    finally:
        with contextlib.suppress(PlaywrightError):
            held[0].abort()  # the page gave up on it long ago


@pytest.mark.parametrize("transport", ["stream", "poll"])
def test_reset_calls_the_refetch_callback(open_board: Callable[..., Page], topic: str, transport: str) -> None:
    page = open_board()
    unknown = "99999999999999-0"  # newer than anything: the server cannot resume from it
    subscribe(page, topic, lastEventId=unknown, noStream=transport == "poll")
    reset = wait_until(page, "probe.resets.length === 1 && probe.resets[0]")
    assert reset["event"] == "reset"
    assert reset["topic"] is None
    assert reset["data"] == {"reason": "unknown-id"}
    assert page.evaluate("probe.sub.lastEventId") == reset["id"] != unknown
    assert page.evaluate("probe.events") == []

    event_id = publish(topic)
    assert wait_until(page, "probe.events.length === 1 && probe.events[0].id") == event_id


@pytest.mark.parametrize("transport", ["stream", "poll"])
def test_unsubscribe_closes_the_connection(
    open_board: Callable[..., Page], nginx: Nginx, topic: str, transport: str
) -> None:
    page = open_board()
    counter = "streams" if transport == "stream" else "polls"

    def open_on_server() -> int:
        return int(httpx.get(f"{nginx.url}events/health/", timeout=5).json()[counter])

    baseline = open_on_server()
    subscribe(page, topic, noStream=transport == "poll")
    wait_until(page, "probe.sub.state === 'live' || probe.sub.state === 'polling'")
    wait_for(lambda: open_on_server() > baseline, 10, f"the {transport} to be open on the server")
    page.evaluate("probe.sub.unsubscribe()")
    assert page.evaluate("probe.sub.state") == "closed"
    wait_for(lambda: open_on_server() == baseline, 10, f"the server to see the {transport} closed")


def test_a_forbidden_topic_closes_with_an_error(open_board: Callable[..., Page]) -> None:
    page = open_board()
    subscribe(page, "user:999999", minDelay=100, maxDelay=200)
    wait_until(page, "probe.sub.state === 'closed'")
    errors = page.evaluate("probe.errors")
    assert [error["status"] for error in errors] == [403]
    # The stream is refused without a status EventSource can read; the
    # long-poll it falls back to says why.
    assert len(attempts(page, "user:999999", "stream")) == 3
