"""Restarting uvicorn behind nginx while pages are open: they come back by themselves.

Changes made while the app was down (from the shell, which publishes to
Redis) reach the pages when they reconnect: the stream resumes with the last
id it saw and the long-poll with ``since``, so the server replays what they
missed instead of sending a ``reset``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.servers import free_port

from .nginx import Nginx, start_nginx
from .site import READ_TIMEOUT, DemoSite, demo_site
from .test_live import press, tracker, value_of

# Reconnecting waits a backoff that has grown while the app was down.
BACK_WITHIN = 30_000


@pytest.fixture
def own_site(redis_url: str, events_prefix: str) -> Iterator[DemoSite]:
    """A site of its own (own database and key prefix): restarting it disturbs no other test."""
    with demo_site(redis_url, f"{events_prefix}-restart") as site:
        yield site


def test_pages_reconnect_after_a_restart_and_replay_what_they_missed(
    own_site: DemoSite, new_context: Callable[..., BrowserContext]
) -> None:
    port = free_port()
    with ExitStack() as stack:
        app = stack.enter_context(own_site.serve(port))
        proxy: Nginx = start_nginx(upstream_port=port, static_root=own_site.static_root, read_timeout=READ_TIMEOUT)
        stack.callback(proxy.stop)

        def open_page(without_eventsource: bool) -> Page:
            page = new_context(without_eventsource=without_eventsource).new_page()
            page.goto(proxy.url)
            state = "polling" if without_eventsource else "live"
            expect(page.locator("#connection")).to_have_attribute("data-state", state)
            return page

        streaming, polling = open_page(False), open_page(True)
        before = value_of(streaming)
        press(streaming)
        for page in (streaming, polling):
            expect(tracker(page).locator(".value")).to_have_text(str(before + 1))

        app.stop()
        for page in (streaming, polling):
            expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
        own_site.manage("bump_tracker", "spiders", "--by", "10")
        own_site.manage("bump_tracker", "deadlines", "--by", "3")

        stack.enter_context(own_site.serve(port))
        for page in (streaming, polling):
            expect(tracker(page).locator(".value")).to_have_text(str(before + 11), timeout=BACK_WITHIN)
            expect(tracker(page, "deadlines").locator(".value")).to_have_text("3")
        expect(streaming.locator("#connection")).to_have_attribute("data-state", "live")
        expect(polling.locator("#connection")).to_have_attribute("data-state", "polling")
        assert streaming.evaluate("window.demo.subscription.transport") == "stream"
        assert streaming.evaluate("document.body.dataset.connects") == "2"
        for page in (streaming, polling):
            # Replayed, not reset: the server knew the id each page resumed from.
            expect(page.locator('#log li[data-event="reset"]')).to_have_count(0)
            assert page.evaluate("window.demo.status.resets") == 0
