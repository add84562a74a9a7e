"""Publishing: one atomic round trip that feeds both the history and live delivery."""

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from django.core.exceptions import SynchronousOnlyOperation
from django.db import transaction
from django.test import override_settings

from events import PublishError, apublish, publish, publish_on_commit
from events.backends.connection import channel_name, close_sync_clients, history_key
from events.core.ids import parse_id

from .servers import HistoryEntry, history


def history_entries(redis_client: redis.Redis, topic: str) -> list[HistoryEntry]:
    return [(id, fields) for id, fields in history(redis_client) if fields["t"] == topic]


def test_publish_appends_to_history_and_returns_the_id(redis_client: redis.Redis, topic: str) -> None:
    event_id = publish(topic, data={"n": 1})
    assert history_entries(redis_client, topic) == [(event_id, {"t": topic, "e": "invalidate", "d": '{"n":1}'})]


def test_publish_announces_the_same_id_on_the_topic_channel(redis_client: redis.Redis, topic: str) -> None:
    pubsub = redis_client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(channel_name(topic))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    event_id = publish(topic, data=[1, "two"], event="changed")
    message = pubsub.get_message(timeout=5)
    pubsub.close()
    assert message["data"] == f'{event_id}\nchanged\n[1,"two"]'


def test_ids_increase_with_each_publish(topic: str) -> None:
    ids = [publish(topic) for _ in range(5)]
    assert [parse_id(i) for i in ids] == sorted(parse_id(i) for i in ids)
    assert len(set(ids)) == 5


def test_history_is_bounded_by_the_setting(redis_client: redis.Redis, make_topic: Callable[[], str]) -> None:
    with override_settings(EVENTS={**_current_events(), "PREFIX": f"bounded-{make_topic()}", "HISTORY": 10}):
        for _ in range(500):
            publish("t")
        # MAXLEN ~ trims whole nodes (100 entries): bounded, if not exact.
        assert redis_client.xlen(history_key()) < 200
        redis_client.delete(history_key())


async def test_apublish_works_from_async_code(redis_client: redis.Redis, topic: str) -> None:
    event_id = await apublish(topic, data={"async": True})
    assert history_entries(redis_client, topic)[0][0] == event_id


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("bad topic",), ValueError, "Invalid topic"),
        (("ok", None, "reset"), ValueError, "reserved"),
        (("ok", None, "bad\nname"), ValueError, "Invalid event name"),
        (("ok", {1, 2}), TypeError, "not JSON-serialisable"),
        (("ok", "x" * 70000), ValueError, "MAX_PAYLOAD"),
    ],
)
def test_publish_refuses_bad_arguments_before_redis(args: tuple[Any, ...], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        publish(*args)


def test_publish_fails_fast_with_a_clear_error_when_redis_is_down() -> None:
    with override_settings(EVENTS={**_current_events(), "REDIS_URL": "redis://127.0.0.1:1/0"}):
        started = time.monotonic()
        with pytest.raises(PublishError, match=r"Could not publish to topic 'x': Redis at redis://127.0.0.1:1/0"):
            publish("x")
        assert time.monotonic() - started < 5
        close_sync_clients()


async def test_apublish_fails_fast_with_a_clear_error_when_redis_is_down() -> None:
    with override_settings(EVENTS={**_current_events(), "REDIS_URL": "redis://127.0.0.1:1/0"}):
        with pytest.raises(PublishError, match="Could not publish"):
            await apublish("x")


@pytest.mark.django_db(transaction=True)
def test_publish_on_commit_publishes_only_after_the_commit(redis_client: redis.Redis, topic: str) -> None:
    with transaction.atomic():
        publish_on_commit(topic, data={"row": 1})
        assert history_entries(redis_client, topic) == []
    assert [fields["d"] for _, fields in history_entries(redis_client, topic)] == ['{"row":1}']


@pytest.mark.django_db(transaction=True)
def test_publish_on_commit_never_publishes_on_rollback(redis_client: redis.Redis, topic: str) -> None:
    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        publish_on_commit(topic)
        raise Rollback
    assert history_entries(redis_client, topic) == []


@pytest.mark.django_db(transaction=True)
def test_publish_on_commit_checks_its_arguments_at_once() -> None:
    with pytest.raises(ValueError, match="Invalid topic"), transaction.atomic():
        publish_on_commit("no spaces allowed")


def _current_events() -> dict[str, Any]:
    from django.conf import settings

    return dict(settings.EVENTS)


@pytest.mark.django_db(transaction=True)
def test_publish_changes_publishes_model_saves_and_deletes_after_commit(redis_client: redis.Redis, topic: str) -> None:
    from django.contrib.auth.models import Group

    from events.model_events import publish_changes

    disconnect = publish_changes(Group, topic=lambda group: f"{topic}-{group.name}")
    try:
        with transaction.atomic():
            group = Group.objects.create(name="a")
            assert history_entries(redis_client, f"{topic}-a") == []
        pk = group.pk
        group.delete()
        with pytest.raises(RuntimeError), transaction.atomic():
            Group.objects.create(name="a")
            raise RuntimeError("rolled back")
    finally:
        disconnect()
    # Disconnected: later changes (in this or other tests) publish nothing.
    Group.objects.create(name="a")
    data = [json.loads(fields["d"]) for _, fields in history_entries(redis_client, f"{topic}-a")]
    assert data == [
        {"model": "auth.group", "pk": pk, "action": "saved"},
        {"model": "auth.group", "pk": pk, "action": "deleted"},
    ]


async def test_current_id_is_the_newest_event_id(topic: str) -> None:
    from events import acurrent_id, current_id

    event_id = await asyncio.to_thread(publish, topic)
    assert current_id() == event_id
    assert await acurrent_id() == event_id


async def test_publish_from_async_code_raises_synchronous_only_operation(topic: str) -> None:
    with pytest.raises(SynchronousOnlyOperation, match="apublish"):
        publish(topic)
    with pytest.raises(SynchronousOnlyOperation, match="apublish"):
        publish_on_commit(topic)
    assert await apublish(topic)
