"""Authorization: the hook and signed tokens decide, before anything is streamed or replayed."""

import asyncio
import warnings
from collections.abc import Callable, Iterator

import httpx
import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory, override_settings

from events import make_token, publish
from events.authorization import default_authorize, denied_topics

from .conftest import SERVER_ENV
from .servers import UvicornServer, start_uvicorn
from .sse import open_stream


@pytest.fixture(scope="module")
def guarded_server(redis_url: str, events_prefix: str) -> Iterator[UvicornServer]:
    """A server whose hook denies topics starting with 'secret' (a sync hook)."""
    env = {"REDIS_URL": redis_url, "EVENTS_PREFIX": events_prefix, "EVENTS_AUTHORIZE": "tests.hooks.deny_secret"}
    with start_uvicorn({**SERVER_ENV, **env}) as srv:
        yield srv


@pytest.mark.parametrize("endpoint", ["/events/stream/", "/events/poll/"])
def test_a_denied_topic_among_allowed_ones_is_a_403_that_names_nothing(
    guarded_server: UvicornServer, endpoint: str, topic: str
) -> None:
    secret = f"secret-{topic}"
    response = httpx.get(f"{guarded_server.url}{endpoint}?topic={topic}&topic={secret}", timeout=5)
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert secret not in response.text


async def test_replay_of_a_denied_topic_is_refused_before_any_event(guarded_server: UvicornServer, topic: str) -> None:
    secret = f"secret-{topic}"
    first = await asyncio.to_thread(publish, topic)
    await asyncio.to_thread(publish, secret, data="hidden")
    url = f"{guarded_server.url}/events/stream/?topic={topic}&topic={secret}"
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(url, headers={"Last-Event-ID": first})
    assert response.status_code == 403
    assert "hidden" not in response.text


async def test_allowed_topics_stream_normally_under_a_hook(guarded_server: UvicornServer, topic: str) -> None:
    first = await asyncio.to_thread(publish, topic)
    second = await asyncio.to_thread(publish, topic)
    async with open_stream(f"{guarded_server.url}/events/stream/?topic={topic}", {"Last-Event-ID": first}) as s:
        assert (await s.next_event()).id == second


def test_async_hooks_are_awaited(start_server: Callable[..., UvicornServer], topic: str) -> None:
    srv = start_server({"EVENTS_AUTHORIZE": "tests.hooks.allow_header"})
    url = f"{srv.url}/events/poll/?topic={topic}&since=0-0"
    assert httpx.get(url, timeout=5).status_code == 403
    publish(topic)
    assert httpx.get(url, headers={"X-Allow": topic}, timeout=5).status_code == 200


def test_a_signed_token_grants_exactly_its_topics(guarded_server: UvicornServer, topic: str) -> None:
    secret = f"secret-{topic}"
    publish(secret)
    token = make_token([secret])
    ok = httpx.get(f"{guarded_server.url}/events/poll/?topic={secret}&since=0-0&token={token}", timeout=5)
    assert ok.status_code == 200
    other = httpx.get(f"{guarded_server.url}/events/poll/?topic=secret-other&since=0-0&token={token}", timeout=5)
    assert other.status_code == 403


def test_a_forged_or_expired_token_is_a_403(guarded_server: UvicornServer, topic: str) -> None:
    token = make_token([f"secret-{topic}"])
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    response = httpx.get(f"{guarded_server.url}/events/poll/?topic=secret-{topic}&token={forged}", timeout=5)
    assert (response.status_code, response.json()["code"]) == (403, "invalid_token")
    with override_settings(EVENTS={"TOKEN_MAX_AGE": -1}):
        from events.tokens import InvalidToken, granted_topics

        with pytest.raises(InvalidToken, match="expired"):
            granted_topics(token)


# transaction=True: the async ORM runs in another thread, outside a test
# transaction, so only a flush takes the user away again.
@pytest.mark.django_db(transaction=True)
async def test_default_hook_allows_public_topics_and_only_ones_own_user_topic() -> None:
    from django.contrib.auth.models import User

    user = await User.objects.acreate(username="ann")
    request = RequestFactory().get("/")

    async def auser() -> User:
        return user

    request.auser = auser
    assert await default_authorize(request, "status")
    assert await default_authorize(request, f"user:{user.pk}")
    assert not await default_authorize(request, f"user:{user.pk + 1}")

    async def anonymous() -> AnonymousUser:
        return AnonymousUser()

    request.auser = anonymous
    assert not await default_authorize(request, f"user:{user.pk}")
    assert await denied_topics(request, ["status", "user:1"]) == ["user:1"]


def test_stream_refusal_happens_before_streaming(guarded_server: UvicornServer) -> None:
    # The 403 is a plain JSON response, not a stream.
    response = httpx.get(f"{guarded_server.url}/events/stream/?topic=secret", timeout=5)
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "hook",
    [
        "tests.hooks.deny_secret",
        "tests.hooks.async_callable_object",
        "tests.hooks.partial_of_async",
        "tests.hooks.marked_coroutine_function",
        "tests.hooks.returns_awaitable",
    ],
)
async def test_every_shape_of_hook_is_awaited_when_async(hook: str, topic: str) -> None:
    """Sync or async, whatever its shape: allowed topics pass, denied ones are refused."""
    request = RequestFactory().get("/events/stream/")
    with override_settings(EVENTS={"AUTHORIZE": hook}), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "coroutine ... was never awaited"
        assert await denied_topics(request, [topic, f"other-{topic}"]) == []
        assert await denied_topics(request, [topic, f"secret-{topic}"]) == [f"secret-{topic}"]
