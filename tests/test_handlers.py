"""The event endpoints' handler: EVENTS["MIDDLEWARE"] hooks and per-request urlconfs, as Django documents them."""

import asyncio
import gc
from collections.abc import Iterator

import httpx
import pytest
from django.conf import settings
from django.test import override_settings

from events import publish
from events.asgi import LifespanApp, events_asgi_app
from events.backends.active import get_hub

from . import lean_chain

# The handler sends request_started/request_finished, whose receiver closes
# stale database connections (a connection left by an earlier test counts).
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def app() -> Iterator[LifespanApp]:
    events = {**settings.EVENTS, "MIDDLEWARE": ["events.middleware.SessionUserMiddleware", "tests.lean_chain.Hooks"]}
    with override_settings(EVENTS=events):
        yield events_asgi_app()


async def get(app: LifespanApp, path: str, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.get(path, headers=headers, timeout=10)


async def test_process_view_can_answer_before_the_view(app: LifespanApp, topic: str) -> None:
    response = await get(app, f"/events/poll/?topic={topic}&since=0-0", **{"X-Stop": "yes"})
    assert response.status_code == 299
    assert response.json() == {"stopped_before": "poll"}


async def test_a_urlconf_set_by_the_chain_is_honoured_and_process_exception_sees_the_error(
    app: LifespanApp, topic: str
) -> None:
    response = await get(app, f"/events/poll/?topic={topic}&since=0-0", **{"X-Urlconf": "broken"})
    assert response.status_code == 298
    assert response.json() == {"caught": "broken view"}


async def test_without_the_hooks_the_view_answers(app: LifespanApp, topic: str) -> None:
    newest = await asyncio.to_thread(publish, topic)
    response = await get(app, f"/events/poll/?topic={topic}&since=0-0")
    assert response.status_code == 200
    assert response.json()["last_id"] == newest


async def test_while_a_poll_waits_nothing_keeps_its_request(topic: str) -> None:
    """The view has returned and the request, its META, session and lazy user are freed at once.

    Without the garbage collector: no reference cycle holds them (thousands
    of waiting polls would otherwise make every collection long).
    """
    events = {**settings.EVENTS, "MIDDLEWARE": ["events.middleware.SessionUserMiddleware", "tests.lean_chain.Remember"]}
    with override_settings(EVENTS=events):
        app = events_asgi_app()
    since = await asyncio.to_thread(publish, topic)
    gc.collect()
    gc.disable()
    try:
        waiting = asyncio.ensure_future(get(app, f"/events/poll/?topic={topic}&since={since}"))
        while not get_hub().polls:  # attached: its request is the last one seen
            assert not waiting.done(), waiting.result().text
            await asyncio.sleep(0.01)
        request = lean_chain.SEEN[-1]
        deadline = asyncio.get_running_loop().time() + 10
        while request() is not None:  # freed once the view returns (after the history read)
            assert asyncio.get_running_loop().time() < deadline, "the waiting poll's request is still alive"
            await asyncio.sleep(0.01)
        assert get_hub().polls and not waiting.done()  # still waiting
        newest = await asyncio.to_thread(publish, topic)
        response = await asyncio.wait_for(waiting, 10)
    finally:
        gc.enable()
    assert response.json()["last_id"] == newest


async def test_a_waiting_poll_whose_response_is_never_sent_leaves_the_hub_at_its_timeout(topic: str) -> None:
    events = {
        **settings.EVENTS,
        "MIDDLEWARE": ["events.middleware.SessionUserMiddleware", "tests.lean_chain.Replace"],
        "LONGPOLL_TIMEOUT": 1.0,
    }
    with override_settings(EVENTS=events):
        app = events_asgi_app()
        since = await asyncio.to_thread(publish, topic)
        response = await get(app, f"/events/poll/?topic={topic}&since={since}", **{"X-Replace": "yes"})
        assert response.json() == {"replaced": "LongPollResponse"}
        deadline = asyncio.get_running_loop().time() + 5
        while get_hub().polls:
            assert asyncio.get_running_loop().time() < deadline, "the dropped poll still holds its slot"
            await asyncio.sleep(0.05)
