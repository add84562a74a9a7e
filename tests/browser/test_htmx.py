"""htmx 2 without glue: client.js dispatches ``live:<topic>`` DOM events, htmx re-fetches on them.

The page is rendered in-process with ``{% load events %}{% live_events ... %}``
under the site's sub-path and served by Playwright at a URL of the nginx
site, so the stream, the fragment and client.js are the real ones. htmx comes
from npm (``scripts/setup.sh`` installs it into ``.run/npm``; tests only).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.template import Context, Template
from django.test import override_settings
from django.test.utils import override_script_prefix
from playwright.sync_api import BrowserContext, Page, Request, Route

from events import publish
from project import settings as project_settings
from tests.servers import ROOT

from .nginx import PREFIX, Nginx

HTMX = ROOT / ".run" / "npm" / "node_modules" / "htmx.org" / "dist" / "htmx.min.js"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><script src="{htmx}"></script></head>
<body>
  <div id="board" hx-get="{prefix}/fragments/board/" hx-trigger="live:board from:body">…</div>
  <div id="marker" hx-get="{prefix}/api/board/" hx-trigger="live:{marker} from:body">…</div>
  {tag}
  <script>
    window.seen = [];
    window.answered = 0;
    window.markerAnswered = 0;
    document.addEventListener("live:board", (event) => window.seen.push(event.detail));
    document.body.addEventListener("htmx:afterRequest", (event) => {{
      if (event.detail.elt.id === "board") window.answered += 1;
      if (event.detail.elt.id === "marker") window.markerAnswered += 1;
    }});
  </script>
</body></html>"""


@pytest.fixture(scope="module")
def htmx_js() -> bytes:
    if not HTMX.exists():
        pytest.fail(f"{HTMX} is missing: run `make test` (scripts/setup.sh installs htmx from npm for the tests).")
    return HTMX.read_bytes()


def render_tag(*topics: str) -> str:
    """What ``{% live_events %}`` renders for a page of the site under its sub-path."""
    # STATIC_URL is prefixed on first read and then cached: read it afresh.
    with override_script_prefix(f"{PREFIX}/"), override_settings(STATIC_URL=project_settings.STATIC_URL):
        return Template('{% load events %}{% live_events "board" marker %}').render(Context({"marker": topics[0]}))


def serve_page(page: Page, nginx: Nginx, html: str, htmx_js: bytes) -> str:
    url = f"{nginx.url}htmx-test/"
    page.route(url, lambda route: route.fulfill(status=200, content_type="text/html", body=html))
    htmx_url = f"{nginx.origin}/htmx-for-tests.js"

    def serve_htmx(route: Route) -> None:
        route.fulfill(status=200, content_type="text/javascript", body=htmx_js)

    page.route(htmx_url, serve_htmx)
    return url


def test_a_publish_makes_one_fragment_request_per_event(
    new_context: Callable[..., BrowserContext], nginx: Nginx, htmx_js: bytes, make_topic: Callable[[], str]
) -> None:
    marker = make_topic()
    html = PAGE.format(htmx=f"{nginx.origin}/htmx-for-tests.js", prefix=PREFIX, marker=marker, tag=render_tag(marker))
    page = new_context().new_page()
    url = serve_page(page, nginx, html, htmx_js)
    fragments: list[str] = []
    markers: list[str] = []

    def finished(request: Request) -> None:
        if "/fragments/board/" in request.url:
            fragments.append(request.url)
        elif "/api/board/" in request.url:
            markers.append(request.url)

    page.on("requestfinished", finished)  # Playwright reports these while the test waits on the page
    page.goto(url)
    page.wait_for_function("window.htmx && LiveEvents.page && LiveEvents.page.state === 'live'")
    assert page.evaluate("htmx.version").startswith("2.")

    events = 4
    for n in range(1, events + 1):
        publish("board", {"n": n})
        # htmx drops a trigger while its request is in flight: wait for each answer.
        page.wait_for_function(f"window.answered >= {n}")
    publish(marker)  # after all of them: once its request is done, every board event was handled
    page.wait_for_function("window.markerAnswered === 1")
    assert len(fragments) == events
    assert len(markers) == 1
    assert page.evaluate("window.answered") == events
    assert page.locator("#board li[data-tracker]").count() >= 1  # the fragment was swapped in
    details = page.evaluate("window.seen")
    assert [detail["data"] for detail in details] == [{"n": n} for n in range(1, events + 1)]
    assert {detail["topic"] for detail in details} == {"board"}
    assert all(detail["event"] == "invalidate" and detail["id"] for detail in details)
