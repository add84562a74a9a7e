"""The event endpoints' own middleware chain: session and user without a thread trip."""

import asyncio

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import AnonymousUser, User
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext

from events import apublish, publish
from events.asgi import LifespanApp, events_asgi_app
from events.middleware import SessionUserMiddleware
from events.serving.handlers import EventsASGIHandler


@pytest.fixture
def app() -> LifespanApp:
    return events_asgi_app()


async def poll(app: LifespanApp, path: str, cookies: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", cookies=cookies) as client:
        return await client.get(path, timeout=10)


def test_the_event_endpoints_use_the_configured_chain(app: LifespanApp) -> None:
    assert isinstance(app.app, EventsASGIHandler)
    # The project lists one async middleware for them, not settings.MIDDLEWARE.
    assert app.app.lean_chain != app.app.get_response_async


@pytest.mark.django_db(transaction=True)
async def test_a_logged_in_user_reads_their_private_topic_through_the_lean_chain(app: LifespanApp) -> None:
    user = await User.objects.acreate(username="ann")
    client = Client()
    await client.aforce_login(user)
    cookies = {"sessionid": client.cookies["sessionid"].value}
    event_id = await apublish(f"user:{user.pk}", data="hello")

    own = await poll(app, f"/events/poll/?topic=user:{user.pk}&since=0-0", cookies)
    assert own.status_code == 200
    assert [e["id"] for e in own.json()["events"]][-1] == event_id

    other = await poll(app, f"/events/poll/?topic=user:{user.pk + 1}&since=0-0", cookies)
    assert other.status_code == 403
    anonymous = await poll(app, f"/events/poll/?topic=user:{user.pk}&since=0-0")
    assert anonymous.status_code == 403


@pytest.mark.django_db(transaction=True)
async def test_public_topics_need_no_session(app: LifespanApp, topic: str) -> None:
    await asyncio.to_thread(publish, topic)
    response = await poll(app, f"/events/poll/?topic={topic}&since=0-0")
    assert response.status_code == 200


async def seen_by_view(cookies: dict[str, str]) -> HttpRequest:
    """The request a view gets from SessionUserMiddleware."""
    seen: list[HttpRequest] = []

    async def view(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        return HttpResponse()

    request = RequestFactory().get("/events/poll/")
    request.COOKIES.update(cookies)
    await SessionUserMiddleware(view)(request)
    return seen[0]


@pytest.mark.django_db
def test_without_a_session_cookie_the_user_is_anonymous_without_a_query() -> None:
    with CaptureQueriesContext(connections["default"]) as queries:
        request = async_to_sync(seen_by_view)({})
        assert isinstance(request.user, AnonymousUser)
        assert async_to_sync(request.auser)() is request.user
        assert request.session.session_key is None
    assert len(queries) == 0


@pytest.mark.django_db(transaction=True)
async def test_with_a_session_cookie_the_user_comes_from_the_session() -> None:
    user = await User.objects.acreate(username="bea")
    client = Client()
    await client.aforce_login(user)
    request = await seen_by_view({"sessionid": client.cookies["sessionid"].value})
    assert (await request.auser()).pk == user.pk
    unknown = await seen_by_view({"sessionid": "no-such-session"})
    assert isinstance(await unknown.auser(), AnonymousUser)
