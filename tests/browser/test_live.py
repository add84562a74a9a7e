"""Two visitors on the demo board, through nginx under /fear-tracker/: a change in one shows in the other."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Locator, Page, expect


def tracker(page: Page, slug: str = "spiders") -> Locator:
    return page.locator(f'#trackers [data-tracker="{slug}"]')


def value_of(page: Page, slug: str = "spiders") -> int:
    return int(tracker(page, slug).locator(".value").inner_text())


def press(page: Page, slug: str = "spiders", delta: int = 1) -> None:
    label = "plus one" if delta > 0 else "minus one"
    tracker(page, slug).get_by_role("button", name=label).click()


def test_change_in_one_page_shows_in_the_other_over_sse(open_board: Callable[..., Page]) -> None:
    alice, bob = open_board(), open_board()
    expect(alice.locator("#transport")).to_have_text("SSE")
    before = value_of(alice)

    press(alice)
    expect(tracker(bob).locator(".value")).to_have_text(str(before + 1))
    expect(tracker(alice).locator(".value")).to_have_text(str(before + 1))
    press(bob, delta=-1)
    expect(tracker(alice).locator(".value")).to_have_text(str(before))

    expect(bob.locator("#recent li").first).to_contain_text("lowered Spiders")
    expect(bob.locator("#log li").first).to_contain_text("invalidate board")
    for page in (alice, bob):
        assert page.evaluate("window.demo.subscription.transport") == "stream"


def test_long_poll_fallback_when_eventsource_is_missing(open_board: Callable[..., Page]) -> None:
    old_alice = open_board(without_eventsource=True)
    old_bob = open_board(without_eventsource=True)
    modern = open_board()
    expect(old_alice.locator("#transport")).to_have_text("long-poll")
    assert old_alice.evaluate("typeof window.EventSource") == "undefined"
    before = value_of(old_alice, "deadlines")

    press(old_alice, "deadlines")
    for page in (old_alice, old_bob, modern):
        expect(tracker(page, "deadlines").locator(".value")).to_have_text(str(before + 1))
    press(modern, "deadlines")
    for page in (old_alice, old_bob):
        expect(tracker(page, "deadlines").locator(".value")).to_have_text(str(before + 2))
    assert old_bob.evaluate("window.demo.subscription.transport") == "poll"


def test_private_topic_reaches_only_its_user(open_board: Callable[..., Page], artifacts: Path) -> None:
    alice = open_board()
    alice.get_by_label("Your name").fill("Alice")
    alice.get_by_role("button", name="Join").click()
    expect(alice.locator("#private")).to_contain_text("Signed in as Alice")
    expect(alice.locator("#connection")).to_have_attribute("data-state", "live")
    # A second tab of Alice's (same cookies), and Bob in his own browser.
    alice_tab = open_board(context=alice.context)
    bob = open_board()
    bob.get_by_label("Your name").fill("Bob")
    bob.get_by_role("button", name="Join").click()
    expect(bob.locator("#connection")).to_have_attribute("data-state", "live")

    press(alice, "public-speaking")
    press(alice, "spiders")
    for page in (alice, alice_tab):
        expect(page.locator("#my-count")).to_have_text("2")
        expect(page.locator("#my-recent li").first).to_contain_text("raised Spiders")
    expect(bob.locator("#recent li").first).to_contain_text("Alice raised Spiders")
    expect(bob.locator("#my-count")).to_have_text("0")

    # Bob may not read Alice's private topic: a 403 that says nothing about it.
    alice_topic = alice.evaluate("window.demo.subscription.topics[1]")
    assert alice_topic.startswith("user:")
    for endpoint in ("stream", "poll"):
        url = bob.evaluate(f"new URL(LiveEvents.config().{endpoint}Url, location).href")
        response = bob.request.get(url, params={"topic": alice_topic})
        assert response.status == 403, (endpoint, response.status, response.text())
        assert alice_topic not in response.text()

    alice.screenshot(path=str(artifacts / "demo.png"), full_page=True)
