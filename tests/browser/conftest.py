"""Fixtures for the browser tests: the demo site behind the shipped nginx, and headless Chromium.

Everything is real: uvicorn started as the systemd unit starts it, nginx from
deploy/nginx/fear-tracker.conf (2 s read timeout), Redis, and Debian's
Chromium driven by Playwright. A missing nginx or Chromium is a failure with
instructions, never a skip. Tests wait for conditions (Playwright's
``expect``) with deadlines; they never sleep to synchronise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from tests.servers import ROOT, UvicornServer

from .nginx import Nginx, start_nginx
from .site import READ_TIMEOUT, DemoSite, demo_site

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts"
# Deadline of every expect() in these tests, in ms.
EXPECT_TIMEOUT = 15_000

expect.set_options(timeout=EXPECT_TIMEOUT)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(autouse=True)
def _close_loop_resources() -> None:
    """Replaces the suite's async clean-up fixture of the same name for these tests.

    They are synchronous: Playwright's sync API runs its own event loop in this
    thread, so no asyncio fixture may run while it is open, and these tests
    start no in-process hub to clean up.
    """


@pytest.fixture(scope="package")
def site(redis_url: str, events_prefix: str) -> Iterator[DemoSite]:
    """The demo site (database, static files), shared by the session's tests."""
    with demo_site(redis_url, events_prefix) as site:
        yield site


@pytest.fixture(scope="package")
def app(site: DemoSite) -> Iterator[UvicornServer]:
    with site.serve() as server:
        yield server


@pytest.fixture(scope="package")
def nginx(site: DemoSite, app: UvicornServer) -> Iterator[Nginx]:
    """The shipped nginx site in front of ``app``."""
    server = start_nginx(upstream_port=app.port, static_root=site.static_root, read_timeout=READ_TIMEOUT)
    yield server
    server.stop()


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    # Package scope: Playwright's event loop must be gone before the suite's
    # asyncio tests (in later modules) run. While it runs in this thread,
    # Django's async-unsafe calls (the ORM, events.publish) refuse to run
    # unless DJANGO_ALLOW_ASYNC_UNSAFE is set, as Django's documentation says
    # for Playwright; these tests call them between browser steps, which is safe.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield playwright


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is required by the browser tests and {CHROMIUM} does not exist. "
            "Run `make test` (it installs Debian's chromium) or `apt-get install -y chromium`; "
            "never `playwright install`."
        )
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """Make browser contexts (separate cookie jars: separate visitors); closed at teardown.

    ``without_eventsource=True`` removes EventSource from every page, like an
    old browser, so the client must long-poll.
    """
    with ExitStack() as stack:

        def make(without_eventsource: bool = False, **options: object) -> BrowserContext:
            context = browser.new_context(viewport={"width": 1100, "height": 760}, **options)  # type: ignore[arg-type]
            stack.callback(context.close)
            if without_eventsource:
                context.add_init_script("delete window.EventSource;")
            return context

        yield make


@pytest.fixture
def open_board(new_context: Callable[..., BrowserContext], nginx: Nginx) -> Callable[..., Page]:
    """Open the board (through nginx, under the sub-path) in a new visitor's browser, once it is live."""

    def open_page(
        without_eventsource: bool = False, context: BrowserContext | None = None, url: str | None = None
    ) -> Page:
        context = context or new_context(without_eventsource=without_eventsource)
        page = context.new_page()
        page.goto(url or nginx.url)
        expect(page.locator("#connection")).to_have_attribute(
            "data-state", "polling" if without_eventsource else "live"
        )
        return page

    return open_page


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
