"""The event endpoints' own middleware chain: session and user without a thread trip."""

import asyncio

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client

from events import apublish, publish
from events.asgi import LifespanApp, events_asgi_app
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
