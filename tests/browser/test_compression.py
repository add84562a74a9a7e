"""A browser EventSource through Django's GZipMiddleware (site-wide middleware, EVENTS["MIDDLEWARE"] = None)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser

from events import publish
from tests.conftest import SERVER_ENV
from tests.servers import UvicornServer, start_uvicorn, wait_for
from tests.test_compression import SETTINGS, subscribers

OPEN_STREAM = """topic => new Promise((resolve, reject) => {
    window.received = [];
    const source = new EventSource(`/events/stream/?topic=${topic}`);
    source.addEventListener("invalidate", event => window.received.push(event.lastEventId));
    source.onopen = () => resolve(source.readyState);
    source.onerror = () => reject(new Error(`EventSource error, readyState ${source.readyState}`));
    window.source = source;
})"""


@pytest.fixture(scope="module")
def stack_server(redis_url: str, events_prefix: str) -> Iterator[UvicornServer]:
    env = {"REDIS_URL": redis_url, "EVENTS_PREFIX": events_prefix, **SERVER_ENV, "DJANGO_SETTINGS_MODULE": SETTINGS}
    with start_uvicorn(env) as srv:
        yield srv


def test_eventsource_gets_every_event_at_once_through_gzip(
    browser: Browser, stack_server: UvicornServer, topic: str
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{stack_server.url}/events/health/")
        assert page.evaluate(OPEN_STREAM, topic) == 1  # OPEN
        wait_for(lambda: subscribers(stack_server, topic) == 1, 10, "the page's subscription")
        ids = [publish(topic, data=n) for n in range(3)]
        page.wait_for_function("count => window.received.length >= count", arg=len(ids), timeout=10_000)
        assert page.evaluate("window.received") == ids
        assert page.evaluate("window.source.readyState") == 1  # still open: nothing failed to decode
    finally:
        context.close()
