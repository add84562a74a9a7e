"""The demo board's views and commands, in process (the browser tests cover it end to end)."""

from __future__ import annotations

import asyncio
import json
from io import StringIO
from typing import Any

import pytest
import redis
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import AsyncClient, Client, override_settings
from django.urls import reverse

from events import publish
from events.core.ids import parse_id
from project.demo.board import BOARD_TOPIC, DEFAULT_TRACKERS, seed
from project.demo.models import Change, Tracker
from tests.servers import free_port, history, newest_history_id

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def trackers() -> None:
    seed()


@pytest.fixture
def since(redis_client: redis.Redis) -> str:
    """The newest event id now: events published by the test come after it."""
    return newest_history_id(redis_client) or "0-0"


def published(redis_client: redis.Redis, since: str, topic: str) -> list[Any]:
    return [json.loads(fields["d"]) for _, fields in history(redis_client, f"({since}") if fields["t"] == topic]


def test_seed_is_idempotent_and_resets_on_demand() -> None:
    assert seed() == len(DEFAULT_TRACKERS)
    assert seed() == 0
    Tracker.objects.filter(slug="spiders").update(value=7)
    seed(reset=True)
    assert set(Tracker.objects.values_list("value", flat=True)) == {0}


def test_a_change_publishes_an_invalidation_after_commit(
    client: Client, trackers: None, redis_client: redis.Redis, since: str
) -> None:
    url = reverse("demo:change", args=["spiders"])
    response = client.post(url, {"delta": "1"}, headers={"Accept": "application/json"})
    assert response.status_code == 200
    assert response.json() == {"tracker": "spiders", "value": 1}
    assert published(redis_client, since, BOARD_TOPIC) == [{"tracker": "spiders"}]
    assert Change.objects.get().user is None


def test_a_change_without_javascript_redirects_to_the_board(client: Client, trackers: None) -> None:
    response = client.post(reverse("demo:change", args=["deadlines"]), {"delta": "-1"})
    assert response.status_code == 302
    assert response["Location"] == reverse("demo:board")
    assert Tracker.objects.get(slug="deadlines").value == -1


@pytest.mark.parametrize(
    ("method", "slug", "data", "status"),
    [
        ("post", "spiders", {"delta": "5"}, 400),
        ("post", "spiders", {}, 400),
        ("post", "no-such-tracker", {"delta": "1"}, 404),
        ("get", "spiders", {}, 405),
    ],
)
def test_bad_changes_are_refused(
    client: Client, trackers: None, method: str, slug: str, data: dict[str, str], status: int
) -> None:
    response = getattr(client, method)(reverse("demo:change", args=[slug]), data)
    assert response.status_code == status
    assert set(Tracker.objects.values_list("value", flat=True)) == {0}


def test_joining_gives_a_private_topic(client: Client, trackers: None, redis_client: redis.Redis, since: str) -> None:
    response = client.post(reverse("demo:join"), {"name": "  Ada   Lovelace "})
    assert response.status_code == 302
    user = get_user_model().objects.get()
    assert user.first_name == "Ada Lovelace"
    assert not user.has_usable_password()

    client.post(reverse("demo:change", args=["spiders"]), {"delta": "1"})
    assert published(redis_client, since, f"user:{user.pk}") == [{"change": Change.objects.get().pk}]
    mine = client.get(reverse("demo:private-data")).json()
    assert (mine["user"], mine["topic"], mine["count"]) == ("Ada Lovelace", f"user:{user.pk}", 1)
    board = client.get(reverse("demo:board-data")).json()
    assert board["recent"][0]["who"] == "Ada Lovelace"
    assert Client().get(reverse("demo:private-data")).json()["user"] is None

    client.post(reverse("demo:leave"))
    assert client.get(reverse("demo:private-data")).json()["user"] is None


def test_joining_without_a_name_changes_nothing(client: Client) -> None:
    assert client.post(reverse("demo:join"), {"name": "   "}).status_code == 302
    assert not get_user_model().objects.exists()


def live_config(html: str) -> dict[str, Any]:
    """The subscribe config rendered by the {% live_events %} tag."""
    start = html.index('<script id="live-events" type="application/json">') + len(
        '<script id="live-events" type="application/json">'
    )
    return json.loads(html[start : html.index("</script>", start)])  # type: ignore[no-any-return]


async def test_the_board_page_renders_its_urls_and_the_id_to_resume_from(async_client: AsyncClient, topic: str) -> None:
    await Tracker.objects.acreate(slug="spiders", name="Spiders", value=3)
    newest = await asyncio.to_thread(publish, topic)
    response = await async_client.get(reverse("demo:board"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-tracker="spiders"' in html
    config = live_config(html)
    assert config["streamUrl"] == reverse("events:stream")
    assert config["pollUrl"] == reverse("events:poll")
    assert config["topics"] == [BOARD_TOPIC]
    assert parse_id(config["lastEventId"]) >= parse_id(newest)

    user = await get_user_model().objects.acreate(username="grace", first_name="Grace")
    await async_client.aforce_login(user)
    config = live_config((await async_client.get(reverse("demo:board"))).content.decode())
    assert config["topics"] == [BOARD_TOPIC, f"user:{user.pk}"]


async def test_the_board_page_works_while_redis_is_down(async_client: AsyncClient) -> None:
    from django.conf import settings

    down = {**settings.EVENTS, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with override_settings(EVENTS=down):
        response = await async_client.get(reverse("demo:board"))
    assert response.status_code == 200
    assert live_config(response.content.decode())["lastEventId"] is None


def test_bump_tracker_command(trackers: None, redis_client: redis.Redis, since: str) -> None:
    out = StringIO()
    call_command("bump_tracker", "spiders", "--by", "3", stdout=out)
    assert out.getvalue().strip() == "Spiders: 3"
    assert published(redis_client, since, BOARD_TOPIC) == [{"tracker": "spiders"}]
    with pytest.raises(CommandError, match="known: spiders, deadlines"):
        call_command("bump_tracker", "nope")
