"""A page subscribed with a subscribe token keeps its events across the token's expiry (``refreshToken``).

The worker here gives tokens 4 s (``EVENTS_TOKEN_MAX_AGE``): the stream ends
at each expiry, and client.js fetches a fresh token (from the page's
``refreshToken`` function, which asks the test) before reconnecting, missing
nothing, instead of failing with ``403``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import override_settings
from playwright.sync_api import BrowserContext, Page

from events import make_token, publish
from tests.servers import UvicornServer, start_uvicorn

from .site import DemoSite

TOPIC = "user:987654"  # private: only a token grants it here


@pytest.fixture
def short_tokens(site: DemoSite) -> Iterator[UvicornServer]:
    # DEBUG on: this worker serves the static files itself (no nginx in front).
    with start_uvicorn({**site.env, "EVENTS_TOKEN_MAX_AGE": "4", "DJANGO_DEBUG": "1"}) as server:
        yield server


def fresh_token(site: DemoSite) -> str:
    with override_settings(SECRET_KEY=site.env["DJANGO_SECRET_KEY"]):
        return make_token([TOPIC])


SUBSCRIBE = """([token, since]) => {
  const config = LiveEvents.config();
  const probe = { events: [], errors: [], refreshed: 0 };
  window.probe = probe;
  probe.sub = LiveEvents.subscribe(config.streamUrl, [TOPIC], (e) => probe.events.push(e.data), {
    share: false,
    pollUrl: config.pollUrl,
    lastEventId: since,
    token,
    minDelay: 200,
    refreshToken: async () => { probe.refreshed += 1; return await window.freshToken(); },
    onError: (e) => probe.errors.push(e.message),
  });
}""".replace("TOPIC", repr(TOPIC))


def test_the_client_refreshes_an_expired_token_and_misses_nothing(
    site: DemoSite, short_tokens: UvicornServer, new_context: object
) -> None:
    context: BrowserContext = new_context()  # type: ignore[operator]
    page: Page = context.new_page()
    page.expose_function("freshToken", lambda: fresh_token(site))
    page.goto(f"{short_tokens.url}/")
    since = publish(TOPIC, data="before")
    page.evaluate(SUBSCRIBE, [fresh_token(site), since])
    page.wait_for_function("probe.sub.state === 'live'")
    publish(TOPIC, data=0)
    page.wait_for_function("probe.events.length === 1")
    # Across at least one expiry (4 s), events keep coming, each once, in order.
    page.wait_for_function("probe.refreshed >= 1", timeout=15_000)
    for number in range(1, 4):
        publish(TOPIC, data=number)
    page.wait_for_function("probe.sub.state === 'live' && probe.events.length === 4", timeout=15_000)
    assert page.evaluate("probe.events") == [0, 1, 2, 3]
    assert page.evaluate("probe.errors") == []
    assert "reason=token-expired" in short_tokens.log()
