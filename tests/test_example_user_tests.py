"""How a project tests its live events with ``events.testing``: written as a user would write theirs.

The demo app stands in for "your project": its views change a tracker and
publish invalidations with ``publish_on_commit``. The unit tests run with
Redis pointed at a closed port, to show they need none; the integration test
opens the real stream (real Redis) and awaits the event.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction
from django.test import Client, TestCase, override_settings
from django.urls import reverse

from events import apublish, publish, publish_on_commit
from events.testing import capture_events, open_stream
from project.demo.models import Tracker
from tests.servers import free_port

NO_REDIS = {**settings.EVENTS, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}


@override_settings(EVENTS=NO_REDIS)
class ChangeTrackerTests(TestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        Tracker.objects.create(slug="spiders", name="Spiders", value=3)

    def test_a_change_invalidates_the_board_once_committed(self) -> None:
        with capture_events() as published:
            with self.captureOnCommitCallbacks(execute=True):
                response = self.client.post(
                    reverse("demo:change", args=["spiders"]), {"delta": "1"}, headers={"accept": "application/json"}
                )
        assert response.status_code == 200
        assert [(event.topic, event.event, event.data) for event in published] == [
            ("board", "invalidate", {"tracker": "spiders"})
        ]

    def test_nothing_is_published_before_the_commit(self) -> None:
        # TestCase wraps each test in a transaction that is rolled back: as in
        # production, publish_on_commit waits for a commit that never comes.
        with capture_events() as published:
            self.client.post(reverse("demo:change", args=["spiders"]), {"delta": "1"})
        assert published == []

    def test_a_rolled_back_change_publishes_nothing(self) -> None:
        with capture_events() as published, self.captureOnCommitCallbacks(execute=True):
            with contextlib.suppress(RuntimeError), transaction.atomic():
                publish_on_commit("board")
                raise RuntimeError("rolled back")
            publish_on_commit("user:1")
        assert published.topics == ["user:1"]

    def test_mistakes_still_raise(self) -> None:
        with capture_events(), pytest.raises(ValueError, match="Invalid topic"):
            publish("not a topic")

    def test_each_event_is_recorded_with_its_data_as_clients_get_it(self) -> None:
        with capture_events() as published:
            first = publish("board", {"when": 1.5})
            publish("user:1", event="invalidate")
        assert published.topics == ["board", "user:1"]
        assert published.on("board")[0].data == {"when": 1.5}
        assert published[0].id == first


# pytest-django's fixtures, as the README shows them.
@pytest.mark.django_db
@override_settings(EVENTS=NO_REDIS)
def test_a_change_invalidates_the_board_with_pytest_django(
    client: Client, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    Tracker.objects.create(slug="spiders", name="Spiders", value=3)
    with capture_events() as published:
        with django_capture_on_commit_callbacks(execute=True):
            client.post("/trackers/spiders/", {"delta": "1"})
    assert published.topics == ["board"]


# Marked as the README shows, so they also run without asyncio_mode = "auto" (see the last test).
@pytest.mark.asyncio
async def test_capture_in_async_code() -> None:
    with override_settings(EVENTS=NO_REDIS):
        async with capture_events() as published:
            await apublish("board", {"n": 1})
    assert [(event.topic, event.data) for event in published] == [("board", {"n": 1})]


@pytest.mark.asyncio
async def test_the_stream_delivers_what_is_published(topic: str) -> None:
    async with open_stream([topic]) as stream:
        event_id = await apublish(topic, {"n": 1})
        event = await stream.next_event(timeout=5)
    assert (event.id, event.topic, event.event, event.data) == (event_id, topic, "invalidate", {"n": 1})


@pytest.mark.asyncio
async def test_next_event_times_out_when_nothing_comes(topic: str) -> None:
    async with open_stream([topic]) as stream:
        with pytest.raises(TimeoutError):
            await stream.next_event(timeout=0.3)
        # The stream is still open after a timeout.
        await apublish(topic)
        assert (await stream.next_event(timeout=5)).topic == topic


@pytest.mark.asyncio
async def test_capture_with_publish_records_the_real_ids(topic: str) -> None:
    async with open_stream([topic]) as stream:
        async with capture_events(publish=True) as published:
            await apublish(topic, {"n": 2})
        event = await stream.next_event(timeout=5)
    assert [e.id for e in published] == [event.id]


@pytest.mark.asyncio
async def test_the_sites_own_keys_are_never_touched(topic: str, redis_client: Any) -> None:
    from events.backends.connection import history_key
    from events.conf import conf

    site_prefix = conf.PREFIX
    site_history = redis_client.xlen(history_key())
    async with open_stream([topic]) as stream:
        test_prefix = conf.PREFIX
        assert test_prefix.startswith(f"{site_prefix}-test-")
        async with capture_events(publish=True):
            await apublish(topic)
        await stream.next_event(timeout=5)
        assert test_prefix == conf.PREFIX  # nested helpers share it
        assert redis_client.exists(history_key()) == 1
    assert site_prefix == conf.PREFIX
    assert redis_client.xlen(history_key()) == site_history
    assert list(redis_client.scan_iter(match=f"*{test_prefix}*")) == []


def test_these_examples_run_without_asyncio_mode_auto_and_without_warnings() -> None:
    """This module, run as a project would run it: strict asyncio mode, warnings shown."""
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-o", "asyncio_mode=strict",
            "-o", "log_cli=true", "--log-cli-level=WARNING", "-k", "not without_asyncio_mode_auto",
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "served without" not in output, output
    assert " passed" in output and "skipped" not in output, output
