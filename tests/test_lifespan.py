"""ASGI lifespan: the hub starts and stops with the server, and the worker is tuned."""

import gc
import signal
from collections.abc import Iterator

import pytest
from django.test import override_settings

from events.asgi import LifespanApp, tune_garbage_collector
from events.backends.active import get_hub
from events.serving.asgi_types import ASGIMessage, Receive, Scope, Send


@pytest.fixture
def restore_gc() -> Iterator[None]:
    """Undo what start-up does to the process: GC settings and signal handlers."""
    thresholds = gc.get_threshold()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def test_gc_thresholds_follow_the_setting(restore_gc: None) -> None:
    with override_settings(EVENTS={"GC_THRESHOLD": (12345, 6, 7)}):
        tune_garbage_collector()
    assert gc.get_threshold() == (12345, 6, 7)


def test_gc_is_left_alone_when_the_setting_is_none(restore_gc: None) -> None:
    gc.set_threshold(700, 10, 10)
    with override_settings(EVENTS={"GC_THRESHOLD": None}):
        tune_garbage_collector()
    assert gc.get_threshold() == (700, 10, 10)


async def test_lifespan_starts_and_stops_the_hub(restore_gc: None) -> None:
    messages: list[ASGIMessage] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> ASGIMessage:
        return messages.pop(0)

    async def send(message: ASGIMessage) -> None:
        sent.append(message["type"])
        if message["type"] == "lifespan.startup.complete":
            hub = get_hub()
            assert hub.started

    async def no_http(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("only the lifespan scope is used here")

    await LifespanApp(app=no_http)({"type": "lifespan"}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
