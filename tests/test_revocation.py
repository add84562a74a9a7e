"""Access ends when the right ends: sign-out, deactivation, password change, ``events.revoke()``, token expiry.

The demo site (its own SQLite file) under two uvicorn processes on one Redis:
a signed-in user's streams on ``user:<pk>`` on both, and a waiting long-poll.
After the change every one of them ends within 2 s (the streams cleanly, with
``retry:``; the long-poll with an empty answer), so an event published after
that reaches none of them; a reconnect with the old session gets ``403``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any
from unittest import mock

import httpx
import pytest
from django.test import override_settings

import events
from events import make_token, publish

from .browser.site import DemoSite, demo_site
from .servers import UvicornServer, start_uvicorn, wait_for
from .sse import SSEStream, open_stream

# Every stream and poll of the user must be gone within this many seconds of the change.
WITHIN = 2.0


@pytest.fixture(scope="module")
def site(redis_url: str, events_prefix: str) -> Iterator[DemoSite]:
    with demo_site(redis_url, events_prefix) as site:
        yield site


@pytest.fixture(scope="module")
def workers(site: DemoSite) -> Iterator[list[UvicornServer]]:
    """Two worker processes of the site (as two hosts would run them), on one Redis."""
    env = {**site.env, "EVENTS_TOKEN_MAX_AGE": "3"}
    with start_uvicorn(env) as one, start_uvicorn(env) as two:
        yield [one, two]


def join(server: UvicornServer, name: str) -> tuple[httpx.Cookies, str]:
    """Sign in on the demo as a new user (``/join/``); return the session cookies and the user's pk."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        client.get("/")
        response = client.post("/join/", data={"name": name, "csrfmiddlewaretoken": client.cookies["csrftoken"]})
        assert response.status_code == 302, response.text
        assert "sessionid" in client.cookies
        return client.cookies, user_pk(server, client.cookies)


def user_pk(server: UvicornServer, cookies: httpx.Cookies) -> str:
    """The pk of the session's user, from the database the site uses."""
    with sqlite3.connect(server.env["DJANGO_DB_PATH"]) as db:
        rows = db.execute(
            "SELECT id FROM auth_user WHERE username = (SELECT username FROM auth_user ORDER BY id DESC LIMIT 1)"
        ).fetchall()
    return str(rows[0][0])


def cookie_header(cookies: httpx.Cookies) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())}


def health(server: UvicornServer) -> dict[str, Any]:
    return dict(httpx.get(f"{server.url}/events/health/", timeout=5).json())


async def opened(stream: SSEStream) -> None:
    """Wait for the stream's ``open`` event: it is subscribed, events flow."""
    frame = await stream.next_event()
    assert frame.event == "open", frame


class Signedin:
    """A user's streams on both workers and a waiting long-poll, on ``user:<pk>``."""

    def __init__(self, workers: list[UvicornServer], cookies: httpx.Cookies, pk: str) -> None:
        self.workers = workers
        self.cookies = cookies
        self.pk = pk
        self.topic = f"user:{pk}"
        self.streams: list[SSEStream] = []
        self.poll: asyncio.Task[httpx.Response] | None = None

    async def open(self, stack: AsyncExitStack) -> None:
        for server in self.workers:
            url = f"{server.url}/events/stream/?topic={self.topic}&open_event=1"
            stream = await stack.enter_async_context(open_stream(url, cookie_header(self.cookies)))
            assert stream.response.status_code == 200
            await opened(stream)
            self.streams.append(stream)
        since = await asyncio.to_thread(
            publish, self.topic, data="before"
        )  # the streams get it; the poll waits after it
        for stream in self.streams:
            assert (await stream.next_event()).json["data"] == "before"
        client = await stack.enter_async_context(httpx.AsyncClient(timeout=30, cookies=self.cookies))
        poll_url = f"{self.workers[0].url}/events/poll/?topic={self.topic}&since={since}"
        self.poll = asyncio.create_task(client.get(poll_url))
        await asyncio.to_thread(wait_for, lambda: health(self.workers[0])["polls"] == 1, 10, "the long-poll waits")

    async def all_end(self, within: float) -> None:
        """Every stream ends cleanly (``retry:``, ``closing: revoked``) and the poll answers, within ``within`` s."""
        assert self.poll is not None
        started = time.monotonic()
        ends = await asyncio.gather(*(stream.until_end(timeout=within + 1) for stream in self.streams))
        answer = await asyncio.wait_for(self.poll, within + 1)
        took = time.monotonic() - started
        assert took <= within, f"access ended after {took:.2f} s, not within {within} s"
        for frames in ends:
            last = frames[-1]
            assert last.get("retry") is not None or any(frame.get("retry") for frame in frames[-2:]), frames
            assert any("closing: revoked" in comment for frame in frames for comment in frame.comments), frames
            assert not any(frame.is_event for frame in frames), f"an event after the revocation: {frames}"
        assert answer.status_code == 200
        assert answer.json()["events"] == []

    async def nothing_arrives_later(self) -> None:
        """An event published now reaches none of them (they ended, and reconnecting is checked apart)."""
        event_id = await asyncio.to_thread(publish, self.topic, data="after")
        for stream in self.streams:
            assert stream.ended
            assert f"id: {event_id}".encode() not in stream.raw

    async def reconnect_status(self) -> int:
        async with httpx.AsyncClient(timeout=10, cookies=self.cookies) as client:
            response = await client.get(f"{self.workers[1].url}/events/poll/?topic={self.topic}&since=0-0")
            return response.status_code


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


def csrf_post(server: UvicornServer, cookies: httpx.Cookies, path: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=10, cookies=cookies) as client:
        return client.post(path, data={"csrfmiddlewaretoken": cookies["csrftoken"]})


async def test_sign_out_ends_the_sessions_streams_and_polls_on_every_worker(
    workers: list[UvicornServer], stack: AsyncExitStack
) -> None:
    cookies, pk = join(workers[0], "Leaving Lou")
    user = Signedin(workers, cookies, pk)
    await user.open(stack)
    response = await asyncio.to_thread(csrf_post, workers[1], cookies, "/leave/")
    assert response.status_code == 302
    await user.all_end(WITHIN)
    await user.nothing_arrives_later()
    assert await user.reconnect_status() == 403


def change_user(site: DemoSite, pk: str, change: str) -> None:
    """Change the user in another process, as an admin or a password form would (signals and all)."""
    site.manage(
        "shell",
        "-c",
        f"from django.contrib.auth import get_user_model\nu = get_user_model().objects.get(pk={pk})\n{change}\nu.save()",
    )


@pytest.mark.parametrize(
    "change", ["u.is_active = False", "u.set_password('a new password')"], ids=["deactivated", "new-password"]
)
async def test_a_deactivated_user_or_new_password_ends_every_stream_and_poll(
    site: DemoSite, workers: list[UvicornServer], stack: AsyncExitStack, change: str
) -> None:
    cookies, pk = join(workers[1], "Changing Chris")
    user = Signedin(workers, cookies, pk)
    await user.open(stack)
    await asyncio.to_thread(change_user, site, pk, change)
    await user.all_end(WITHIN)
    await user.nothing_arrives_later()
    assert await user.reconnect_status() == 403


async def test_revoke_ends_every_stream_and_poll_and_the_client_reconnects_with_its_rights(
    workers: list[UvicornServer], stack: AsyncExitStack
) -> None:
    cookies, pk = join(workers[0], "Revoked Robin")
    user = Signedin(workers, cookies, pk)
    await user.open(stack)
    await events.arevoke(pk)
    await user.all_end(WITHIN)
    await user.nothing_arrives_later()
    # The right itself was not taken away: the session may subscribe again.
    assert await user.reconnect_status() == 200


def test_revoke_needs_a_saved_user() -> None:
    with pytest.raises(ValueError, match="saved user"):
        events.revoke(None)


async def test_a_stream_opened_with_a_token_ends_at_its_expiry(
    site: DemoSite, workers: list[UvicornServer], stack: AsyncExitStack
) -> None:
    with override_settings(SECRET_KEY=site.env["DJANGO_SECRET_KEY"]):
        token = make_token(["user:999999"])
    url = f"{workers[0].url}/events/stream/?topic=user:999999&token={token}&open_event=1"
    started = time.monotonic()
    stream = await stack.enter_async_context(open_stream(url))
    assert stream.response.status_code == 200
    frame = await stream.next_event()
    assert frame.event == "open"
    expires = frame.json["data"]["token_expires"]
    assert abs(expires - (time.time() + 3)) < 2.5
    frames = await stream.until_end(timeout=6)
    assert time.monotonic() - started < 4.5, "the stream outlived its token"
    assert any("closing: token-expired" in comment for frame in frames for comment in frame.comments), frames
    assert frames[-1].get("retry") is not None or any(frame.get("retry") for frame in frames)
    # Once it has expired, the same token is refused (the stream ended a little before: jitter).
    await asyncio.to_thread(wait_for, lambda: time.time() > expires + 1, 5, "the token's expiry")
    async with httpx.AsyncClient(timeout=10) as client:
        expired = await client.get(f"{workers[0].url}/events/poll/?topic=user:999999&token={token}")
    assert expired.status_code == 403
    assert expired.json()["code"] == "invalid_token"


@pytest.mark.parametrize("path", ["stream", "poll"])
async def test_a_token_dated_in_the_future_is_refused(site: DemoSite, workers: list[UvicornServer], path: str) -> None:
    with (
        override_settings(SECRET_KEY=site.env["DJANGO_SECRET_KEY"]),
        mock.patch("time.time", return_value=time.time() + 600),
    ):
        token = make_token(["user:999999"])
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{workers[0].url}/events/{path}/?topic=user:999999&token={token}")
    assert response.status_code == 403
    assert response.json() == {"error": "The subscribe token is dated in the future.", "code": "invalid_token"}


def test_the_log_names_sessions_by_hash_only(workers: list[UvicornServer]) -> None:
    cookies, _ = join(workers[0], "Logged Lee")
    session_key = cookies["sessionid"]
    csrf_post(workers[0], cookies, "/leave/")
    for server in workers:
        assert session_key not in server.log()
