"""One connection per browser, shared by its tabs (client.js), in Chromium through nginx over HTTP/1.1.

Chromium opens at most 6 HTTP/1.1 connections per host for all its tabs: with
one stream per tab, the 7th tab of the demo would not even load. The tabs of
one browser context share one stream: a leader tab holds it (Web Locks), the
others get its events over a BroadcastChannel. The site runs on
http://127.0.0.1, a secure context, so Web Locks exist.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
from django.test import override_settings
from playwright.sync_api import BrowserContext, Page, expect

from events import make_token, publish
from tests.servers import wait_for

from .nginx import Nginx
from .site import DemoSite
from .test_live import press, tracker, value_of

TABS = 8
# A new leader must have taken over within this long after the old one closed.
TAKEOVER_WITHIN = 3.0


def open_streams(nginx: Nginx) -> int:
    return int(httpx.get(f"{nginx.url}events/health/", timeout=5).json()["streams"])


def received(page: Page) -> int:
    return int(page.evaluate("window.demo.status.received"))


def leaders(pages: list[Page]) -> list[Page]:
    return [page for page in pages if page.evaluate("window.demo.subscription.leader")]


@contextmanager
def publishing(topic: str, count: int, every: float) -> Iterator[list[str]]:
    """Publish ``count`` events on ``topic`` from a thread, one every ``every`` seconds; joined on exit."""
    ids: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in range(count):
                ids.append(publish(topic))
                time.sleep(every)  # paces the publisher; no test condition waits on it
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name="publisher")
    thread.start()
    try:
        yield ids
    finally:
        thread.join(60)
    assert not errors, errors
    assert len(ids) == count


def test_eight_tabs_share_one_stream_and_a_ninth_still_loads(
    open_board: Callable[..., Page], new_context: Callable[..., BrowserContext], nginx: Nginx
) -> None:
    context = new_context()
    tabs = [open_board(context=context) for _ in range(TABS)]
    wait_for(lambda: open_streams(nginx) == 1, 15, "a single open stream for the 8 tabs")
    assert len(leaders(tabs)) == 1
    for page in tabs:
        assert page.evaluate("window.demo.subscription.transport") == "stream"
    expect(tabs[1].locator("#sharing")).to_have_text("shared with another tab")

    before = value_of(tabs[0])
    counts = [received(page) for page in tabs]
    press(tabs[3])
    press(tabs[5], "deadlines")
    press(tabs[7])
    for page in tabs:
        expect(tracker(page).locator(".value")).to_have_text(str(before + 2))
        expect(tracker(page, "deadlines").locator(".value")).not_to_have_text("0")
    for page, count in zip(tabs, counts, strict=True):
        page.wait_for_function(f"window.demo.status.received >= {count + 3}")
        assert received(page) == count + 3  # each change once in each tab

    # A 9th tab loads at once (nothing holds the browser's 6 connections).
    started = time.monotonic()
    ninth = context.new_page()
    ninth.goto(nginx.url, timeout=10_000)
    expect(ninth.locator("#connection")).to_have_attribute("data-state", "live")
    assert time.monotonic() - started < 10
    assert open_streams(nginx) == 1


def test_when_the_leader_closes_another_tab_takes_over_and_nothing_is_lost_or_doubled(
    open_board: Callable[..., Page], new_context: Callable[..., BrowserContext], nginx: Nginx
) -> None:
    context = new_context()
    tabs = [open_board(context=context) for _ in range(4)]
    wait_for(lambda: open_streams(nginx) == 1, 15, "one stream for the 4 tabs")
    [leader] = leaders(tabs)
    others = [page for page in tabs if page is not leader]
    counts = [received(page) for page in others]
    total = 40

    with publishing("board", total, every=0.05) as ids:
        wait_for(lambda: len(ids) >= total // 3, 15, "some events published")
        leader.close()
        closed_at = time.monotonic()
        wait_for(lambda: len(leaders(others)) == 1, TAKEOVER_WITHIN + 2, "a new leader")
        took = time.monotonic() - closed_at
    assert took < TAKEOVER_WITHIN, took

    for page, count in zip(others, counts, strict=True):
        page.wait_for_function(f"window.demo.status.received >= {count + total}")
    # Every event once in every remaining tab: none lost, none twice.
    for page, count in zip(others, counts, strict=True):
        assert received(page) == count + total
        expect(page.locator('#log li[data-event="reset"]')).to_have_count(0)
    wait_for(lambda: open_streams(nginx) == 1, 15, "one stream again")


SUBSCRIBE = """([topics, token]) => {
  const live = LiveEvents.config();
  window.probe = { events: [] };
  window.probe.sub = LiveEvents.subscribe(live.streamUrl, topics, (e) => window.probe.events.push(e.topic),
    { ...LiveEvents.optionsFrom(live), token });
}"""


def test_tabs_with_different_topics_each_get_only_theirs(
    open_board: Callable[..., Page],
    new_context: Callable[..., BrowserContext],
    nginx: Nginx,
    make_topic: Callable[[], str],
) -> None:
    context = new_context()
    first, second = open_board(context=context), open_board(context=context)
    mine, yours = make_topic(), make_topic()
    first.evaluate(SUBSCRIBE, [[mine], None])
    second.evaluate(SUBSCRIBE, [[yours], None])
    for page in (first, second):
        page.wait_for_function("window.probe.sub.state === 'live'")
    publish(mine)
    publish(yours)
    publish(mine)
    first.wait_for_function("window.probe.events.length >= 2")
    second.wait_for_function("window.probe.events.length >= 1")
    # A marker after them all: once it arrived, nothing else is on its way.
    marker = make_topic()
    for page in (first, second):
        page.evaluate(
            f"LiveEvents.subscribe(LiveEvents.config().streamUrl, ['{marker}'], () => window.probe.done = true, "
            "LiveEvents.optionsFrom(LiveEvents.config()))"
        )
    wait_for(lambda: open_streams(nginx) == 1, 15, "the tabs to share one stream")
    publish(marker)
    for page in (first, second):
        page.wait_for_function("window.probe.done === true")
    assert first.evaluate("window.probe.events") == [mine, mine]
    assert second.evaluate("window.probe.events") == [yours]


def test_subscriptions_with_different_tokens_do_not_share(
    open_board: Callable[..., Page],
    new_context: Callable[..., BrowserContext],
    make_topic: Callable[[], str],
    site: DemoSite,
) -> None:
    context = new_context()
    first, second = open_board(context=context), open_board(context=context)
    topic = make_topic()
    with override_settings(SECRET_KEY=site.env["DJANGO_SECRET_KEY"]):  # signed as the site signs them
        tokens = make_token([topic]), make_token([topic, "board"])
    first.evaluate(SUBSCRIBE, [[topic], tokens[0]])
    second.evaluate(SUBSCRIBE, [[topic], tokens[1]])
    for page in (first, second):
        page.wait_for_function("window.probe.sub.state === 'live'")
        assert page.evaluate("window.probe.sub.leader") is True  # each holds its own connection
    publish(topic)
    for page in (first, second):
        page.wait_for_function("window.probe.events.length === 1")


def test_sharing_can_be_turned_off(
    open_board: Callable[..., Page],
    new_context: Callable[..., BrowserContext],
    nginx: Nginx,
    make_topic: Callable[[], str],
) -> None:
    context = new_context()
    first, second = open_board(context=context), open_board(context=context)
    wait_for(lambda: open_streams(nginx) == 1, 15, "one shared stream")
    topic = make_topic()
    second.evaluate(
        "(topic) => { window.own = LiveEvents.subscribe(LiveEvents.config().streamUrl, [topic], () => {}, { share: false }); }",
        topic,
    )
    second.wait_for_function("window.own.state === 'live'")
    wait_for(lambda: open_streams(nginx) == 2, 15, "a second stream of its own")
    assert first.evaluate("window.demo.subscription.state") == "live"


def test_without_web_locks_each_tab_has_its_own_stream(
    open_board: Callable[..., Page], new_context: Callable[..., BrowserContext], nginx: Nginx
) -> None:
    context = new_context()
    # Like a browser without Web Locks (or a page outside a secure context).
    context.add_init_script("Object.defineProperty(Navigator.prototype, 'locks', { get: () => undefined });")
    first, second = open_board(context=context), open_board(context=context)
    assert first.evaluate("navigator.locks") is None
    wait_for(lambda: open_streams(nginx) == 2, 15, "a stream per tab")
    for page in (first, second):
        assert page.evaluate("window.demo.subscription.leader") is True
    before = value_of(first)
    press(second)
    for page in (first, second):
        expect(tracker(page).locator(".value")).to_have_text(str(before + 1))


def test_a_refused_topic_fails_only_the_subscription_that_brought_it(
    open_board: Callable[..., Page], new_context: Callable[..., BrowserContext], nginx: Nginx
) -> None:
    context = new_context()
    first, second = open_board(context=context), open_board(context=context)
    second.evaluate("""() => {
      const live = LiveEvents.config();
      window.refused = { errors: [] };
      window.refused.sub = LiveEvents.subscribe(live.streamUrl, ["user:999999"], () => {}, {
        ...LiveEvents.optionsFrom(live),
        onError: (error) => window.refused.errors.push(error.status),
      });
    }""")
    second.wait_for_function("window.refused.sub.state === 'closed'", timeout=30_000)
    assert second.evaluate("window.refused.errors") == [403]
    # The others reconnected without the refused topic and still get their events.
    for page in (first, second):
        page.wait_for_function("window.demo.subscription.state === 'live'")
    before = value_of(first)
    press(second)
    for page in (first, second):
        expect(tracker(page).locator(".value")).to_have_text(str(before + 1))
    wait_for(lambda: open_streams(nginx) == 1, 15, "one stream again")


def test_a_lone_tab_never_says_it_shares(new_context: Callable[..., BrowserContext], nginx: Nginx) -> None:
    """The note appears only when another tab really holds the stream, never while this one waits for the lock."""
    context = new_context()
    page = context.new_page()
    # Every text the note ever shows, recorded from the start.
    page.add_init_script(
        """
        window.sharingTexts = [];
        document.addEventListener("DOMContentLoaded", () => {
          const note = document.getElementById("sharing");
          window.sharingTexts.push(note.textContent);
          new MutationObserver(() => window.sharingTexts.push(note.textContent)).observe(
            note, { childList: true, characterData: true, subtree: true });
        });
        """
    )
    page.goto(nginx.url)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    assert page.evaluate("window.demo.subscription.leader") is True
    assert "shared with another tab" not in page.evaluate("window.sharingTexts")
    # A second tab of the same browser does share, and says so.
    second = context.new_page()
    second.goto(nginx.url)
    expect(second.locator("#sharing")).to_have_text("shared with another tab")
