"""``manage.py runserver`` streams: ASGI under uvicorn, static files with DEBUG=True, autoreload, clean Ctrl-C."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from django.apps import apps
from django.test import override_settings

from events.checks import check_app_order

from .conftest import SERVER_ENV
from .runserver import ctrl_c_ends_streams_cleanly, start_runserver
from .servers import ROOT, wait_for
from .sse import open_attached_stream

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def env(redis_url: str, events_prefix: str) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "EVENTS_PREFIX": events_prefix, "DJANGO_DEBUG": "1", **SERVER_ENV}


async def test_runserver_streams_serves_static_files_and_stops_cleanly_on_ctrl_c(
    env: dict[str, str], topic: str
) -> None:
    with start_runserver(env) as server:
        async with httpx.AsyncClient(timeout=5) as client:
            script = await client.get(f"{server.url}/static/events/client.js")
        assert script.status_code == 200
        assert "EventSource" in script.text
        await ctrl_c_ends_streams_cleanly(server, topic)
        log = server.log()
    assert server.process.returncode == 0, log
    assert "Uvicorn running" in log
    assert "Traceback" not in log, log


async def test_a_code_change_reloads_after_ending_the_streams(env: dict[str, str], topic: str) -> None:
    touched = ROOT / "project" / "urls.py"
    with start_runserver(env) as server:
        stream = await open_attached_stream(f"{server.url}/events/stream/?topic={topic}")
        try:
            # Touched until the reloader says it noticed, and not after: a
            # change made before its first look at the file (it looks once a
            # second, and records a file it has not seen before without
            # reloading) goes unseen.
            def noticed() -> bool:
                touched.touch()
                return "changed, reloading." in server.log()

            await asyncio.to_thread(wait_for, noticed, 30, "the reloader to notice the change", 0.5)
            body = await stream.read_to_end(timeout=10)
        finally:
            await stream.close()
        assert b": closing: shutdown; reconnect\n\n" in body
        # The reloaded server streams again.
        await asyncio.to_thread(wait_for, lambda: server.log().count("Uvicorn running") == 2, 30, "the reload")
        await ctrl_c_ends_streams_cleanly(server, topic, streams=1)


async def test_noreload_stops_cleanly_on_ctrl_c(env: dict[str, str], topic: str) -> None:
    with start_runserver(env, "--noreload") as server:
        await ctrl_c_ends_streams_cleanly(server, topic)
        log = server.log()
    assert server.process.returncode == 0, log
    assert "Traceback" not in log, log


async def test_wsgi_is_the_documented_opt_out(env: dict[str, str]) -> None:
    with start_runserver(env, "--wsgi", "--noreload") as server:
        async with httpx.AsyncClient(timeout=5) as client:
            script = await client.get(f"{server.url}/static/events/client.js")
        assert script.status_code == 200
        log = server.log()
    assert "Uvicorn running" not in log, log


def test_events_after_staticfiles_is_warned_about() -> None:
    assert check_app_order() == []
    order = [config.name for config in apps.get_app_configs() if config.name != "events"]
    wrong = [*order, "events"]
    with override_settings(INSTALLED_APPS=wrong):
        (warning,) = check_app_order()
    assert warning.id == "events.W004"


def test_the_command_is_the_events_one() -> None:
    from django.core.management import get_commands

    assert get_commands()["runserver"] == "events"
