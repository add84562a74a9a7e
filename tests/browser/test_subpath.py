"""Links, redirects and static files under the /fear-tracker/ sub-path.

nginx strips the prefix and uvicorn's ``--root-path`` puts it back, so every
URL Django builds carries it; nginx serves the static files itself.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from playwright.sync_api import BrowserContext, Page, expect

from tests.servers import UvicornServer

from .nginx import PREFIX, Nginx
from .test_live import tracker, value_of

URLS_IN_PAGE = """() => {
  const attribute = (selector, name) => Array.from(document.querySelectorAll(selector), (el) => el.getAttribute(name));
  const config = JSON.parse(document.getElementById("live-config").textContent);
  const live = LiveEvents.config();  // rendered by {% live_events %}
  return {
    fetched: attribute("a[href]", "href").concat(attribute("link[href]", "href"), attribute("script[src]", "src"),
      [config.boardUrl, config.privateUrl]),
    posted: attribute("form[action]", "action"),
    live: [live.streamUrl, live.pollUrl],
  };
}"""


def test_redirects_keep_the_prefix(nginx: Nginx) -> None:
    with httpx.Client(base_url=nginx.origin, timeout=10) as client:
        bare = client.get(PREFIX)  # nginx
        assert (bare.status_code, bare.headers["location"]) == (301, f"{PREFIX}/")
        no_slash = client.get(f"{PREFIX}/events/health")  # Django's APPEND_SLASH
        assert (no_slash.status_code, no_slash.headers["location"]) == (301, f"{PREFIX}/events/health/")


def test_every_url_in_the_page_is_under_the_prefix(open_board: Callable[..., Page], nginx: Nginx) -> None:
    page = open_board()
    urls = page.evaluate(URLS_IN_PAGE)
    everything = urls["fetched"] + urls["posted"] + urls["live"]
    assert len(urls["posted"]) >= 8
    assert [url for url in everything if not url.startswith(f"{PREFIX}/")] == []
    assert urls["live"] == [f"{PREFIX}/events/stream/", f"{PREFIX}/events/poll/"]
    for url in set(urls["fetched"]):  # forms are posted by the other tests
        response = page.request.get(nginx.origin + url)
        assert response.status == 200, (url, response.status)


def test_static_files_come_from_nginx(open_board: Callable[..., Page], nginx: Nginx, app: UvicornServer) -> None:
    page = open_board()
    # The stylesheet and both scripts loaded and ran.
    assert page.evaluate("getComputedStyle(document.documentElement).backgroundColor") == "rgb(246, 244, 239)"
    assert page.evaluate("typeof window.LiveEvents.subscribe") == "function"
    for path, content_type in [
        ("static/events/client.js", "javascript"),
        ("static/demo/board.js", "javascript"),
        ("static/demo/board.css", "text/css"),
    ]:
        response = httpx.get(nginx.url + path, timeout=10)
        assert response.status_code == 200
        assert content_type in response.headers["content-type"]
        assert response.headers["cache-control"] == "max-age=3600"  # nginx's `expires 1h`
        # Django (DEBUG off) does not serve them: nginx does.
        assert httpx.get(f"{app.url}/{path}", timeout=10).status_code == 404


def test_forms_work_without_javascript(new_context: Callable[..., BrowserContext], nginx: Nginx) -> None:
    page = new_context(java_script_enabled=False).new_page()
    page.goto(nginx.url)
    before = value_of(page, "public-speaking")
    tracker(page, "public-speaking").get_by_role("button", name="plus one").click()
    expect(page).to_have_url(nginx.url)  # POST, then redirect back under the prefix
    expect(tracker(page, "public-speaking").locator(".value")).to_have_text(str(before + 1))

    page.get_by_label("Your name").fill("Carol")
    page.get_by_role("button", name="Join").click()
    expect(page).to_have_url(nginx.url)
    expect(page.locator("#private")).to_contain_text("Signed in as Carol")
    page.get_by_role("button", name="Leave").click()
    expect(page).to_have_url(nginx.url)
    expect(page.get_by_role("button", name="Join")).to_be_visible()
