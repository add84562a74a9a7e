"""Test helpers for projects that use the events app.

``capture_events()`` records what the code under test publishes, without
Redis by default, so unit tests need none::

    from events.testing import capture_events

    def test_renaming_invalidates_the_board(client):
        with capture_events() as published:
            client.post("/trackers/spiders/rename/", {"name": "Big spiders"})
        assert published.topics == ["board"]

``open_stream()`` opens the app's SSE endpoint in-process (Django's
``AsyncClient``, the real view, hub and Redis, under a key prefix of its
own so the site's real keys are never touched) for integration tests and
awaits the next event with a timeout::

    from events import apublish
    from events.testing import open_stream

    async def test_the_board_hears_about_it():
        async with open_stream(["board"]) as stream:
            await apublish("board", {"id": 1})
            event = await stream.next_event(timeout=5)
        assert (event.topic, event.data) == ("board", {"id": 1})
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from django.conf import settings
from django.test import AsyncClient, override_settings
from django.urls import reverse

from . import publishing
from .conf import conf
from .core.tasks import cancel_and_wait

__all__ = ["CapturedEvents", "EventStream", "PublishedEvent", "capture_events", "open_stream", "own_prefix"]


# The test key prefixes in use (innermost last): nested helpers share the outer one.
_test_prefixes: list[str] = []


@contextmanager
def own_prefix() -> Iterator[str]:
    """A Redis key prefix of its own while active, so a test never touches the site's real keys.

    ``EVENTS["PREFIX"]`` becomes ``<PREFIX>-test-<8 hex digits>`` (through
    ``override_settings``) for everything in this process (publishes, the
    hub, streams); on leaving, the keys under it are deleted. Inside another
    ``own_prefix()`` (e.g. ``capture_events(publish=True)`` within
    ``open_stream()``) the outer prefix is kept, so both see the same events.

    Example::

        from events import publish
        from events.testing import own_prefix

        def test_publishing_reaches_redis():
            with own_prefix() as prefix:
                publish("board")  # stored under ``prefix``, deleted on leaving
    """
    if _test_prefixes:
        yield _test_prefixes[-1]
        return
    prefix = f"{conf.PREFIX}-test-{uuid.uuid4().hex[:8]}"
    override = override_settings(EVENTS={**getattr(settings, "EVENTS", {}), "PREFIX": prefix})
    override.enable()
    _test_prefixes.append(prefix)
    try:
        yield prefix
    finally:
        _test_prefixes.pop()
        try:
            _delete_keys(prefix)
        finally:
            override.disable()


def _delete_keys(prefix: str) -> None:
    """Delete the keys under ``prefix`` (best effort: Redis may be down in the test)."""
    import redis

    from .backends.cluster.connection import get_sync_cluster, is_cluster_url
    from .backends.connection import get_sync_client

    client: Any = get_sync_cluster() if is_cluster_url(conf.REDIS_URL) else get_sync_client()
    try:
        for key in client.scan_iter(match=f"*{prefix}*"):
            client.delete(key)
    except redis.RedisError:
        pass


@dataclass(frozen=True)
class PublishedEvent:
    """One event: what a client receives (``data`` decoded from the JSON sent).

    Example::

        event = published[0]
        assert (event.topic, event.event, event.data) == ("board", "invalidate", {"tracker": "spiders"})
    """

    topic: str | None
    event: str
    data: Any
    id: str


class CapturedEvents(list[PublishedEvent]):
    """The events published while ``capture_events()`` was active, in order (a list).

    Example::

        with capture_events() as published:
            publish("board")
            publish("user:1", {"change": 7})
        assert published.topics == ["board", "user:1"]
        assert [e.data for e in published.on("user:1")] == [{"change": 7}]
    """

    @property
    def topics(self) -> list[str | None]:
        """The topic of each event, in order (``None`` for a reset)."""
        return [event.topic for event in self]

    def on(self, topic: str) -> list[PublishedEvent]:
        """The events published on ``topic``."""
        return [event for event in self if event.topic == topic]


class capture_events:  # lower case: used like a function, `with capture_events() as published`
    """Record every ``publish``/``apublish`` (and ``publish_on_commit`` once it runs) while active.

    ``with`` or ``async with``. By default nothing reaches Redis: each publish is
    validated as usual (a bad topic or payload still raises), recorded, and
    given a made-up id. ``publish=True`` also publishes to Redis (then the
    recorded ids are the real ones), under a key prefix of its own
    (:func:`own_prefix`). ``publish_on_commit`` behaves as in
    production: inside Django's ``TestCase`` nothing is recorded until the
    transaction commits, so use ``captureOnCommitCallbacks(execute=True)``.
    Publishes from other threads are recorded too.

    Example::

        from events.testing import capture_events

        class ChangeTrackerTests(TestCase):
            def test_a_change_invalidates_the_board(self):
                with capture_events() as published, self.captureOnCommitCallbacks(execute=True):
                    self.client.post("/trackers/spiders/", {"delta": "1"})
                assert published.topics == ["board"]
    """

    def __init__(self, *, publish: bool = False) -> None:
        self.publishes = publish
        self.events = CapturedEvents()
        self._lock = threading.Lock()
        self._prefix = own_prefix() if publish else None

    def record(self, topic: str, event: str, payload: str, event_id: str) -> None:
        with self._lock:
            self.events.append(PublishedEvent(topic, event, json.loads(payload), event_id))

    def __enter__(self) -> CapturedEvents:
        if self._prefix is not None:
            self._prefix.__enter__()
        publishing.recorders.append(self)
        return self.events

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        publishing.recorders.remove(self)
        if self._prefix is not None:
            self._prefix.__exit__(exc_type, exc, traceback)

    async def __aenter__(self) -> CapturedEvents:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, traceback)


class EventStream:
    """An open SSE response of the app, read by a task into a bounded queue.

    What ``open_stream()`` gives. The reader task stops reading while the
    queue is full (the server then treats this client as slow, as it would a
    real one).

    Example::

        async with open_stream(["board"]) as stream:
            await apublish("board")
            event = await stream.next_event(timeout=5)
    """

    QUEUE_SIZE = 1000

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._events: asyncio.Queue[PublishedEvent | None] = asyncio.Queue(self.QUEUE_SIZE)
        self._reader = asyncio.create_task(self._read(), name="events-testing-stream")
        self.ended = False

    async def next_event(self, timeout: float = 5.0) -> PublishedEvent:
        """The next event (heartbeats skipped); TimeoutError if none comes within ``timeout`` seconds."""
        if self.ended and self._events.empty():
            raise AssertionError("the stream has ended")
        try:
            event = await asyncio.wait_for(self._events.get(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no event within {timeout} s") from None
        if event is None:
            raise AssertionError("the stream has ended")
        return event

    async def _read(self) -> None:
        fields: dict[str, str] = {}
        data: list[str] = []
        buffer = b""
        try:
            async for chunk in self._chunks:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    line = raw.decode().rstrip("\r")
                    if line == "":
                        if data:
                            body = json.loads("\n".join(data))
                            event = PublishedEvent(
                                body["topic"], fields.get("event", "message"), body["data"], fields.get("id", "")
                            )
                            await self._events.put(event)
                        fields, data = {}, []
                    elif not line.startswith(":"):
                        name, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if name == "data":
                            data.append(value)
                        else:
                            fields[name] = value
        finally:
            self.ended = True
            if self._events.empty():
                self._events.put_nowait(None)

    async def aclose(self) -> None:
        await cancel_and_wait(self._reader)
        closer = getattr(self._chunks, "aclose", None)
        if closer is not None:
            await closer()


class open_stream:  # lower case: used like a function, `async with open_stream([...]) as stream`
    """Open the app's SSE endpoint (``events:stream``) on ``topics``, in-process, for a test.

    Without ``last_event_id`` it resumes from the newest event id at opening,
    so everything published after ``open_stream()`` returns is delivered (no
    race with the subscription). Needs a real Redis. ``client``: a Django
    ``AsyncClient`` (e.g. logged in with ``aforce_login``) for topics the
    authorization hook only grants to some users; ``token``: a subscribe token.
    When the stream started this event loop's hub, leaving stops it again.
    While open, the process uses a key prefix of its own (:func:`own_prefix`):
    what the test publishes meanwhile reaches the stream, and the site's
    real keys are never touched.

    Example::

        from events import apublish
        from events.testing import open_stream

        async def test_the_board_hears_about_it():
            async with open_stream(["board"]) as stream:
                await apublish("board", {"id": 1})
                event = await stream.next_event(timeout=5)
            assert (event.topic, event.data) == ("board", {"id": 1})
    """

    def __init__(
        self,
        topics: Iterable[str],
        *,
        last_event_id: str | None = None,
        token: str | None = None,
        client: AsyncClient | None = None,
    ) -> None:
        self.topics = list(topics)
        self.last_event_id = last_event_id
        self.token = token
        self.client = client or AsyncClient()
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> EventStream:
        from .asgi import shutdown
        from .backends.active import acurrent_id, get_hub

        self._stack.enter_context(own_prefix())
        if not get_hub().started:
            self._stack.push_async_callback(shutdown)  # the hub is ours: stop it when leaving
        params: dict[str, Any] = {"topic": self.topics}
        params["last_event_id"] = self.last_event_id or await acurrent_id(self.topics)
        if self.token:
            params["token"] = self.token
        response = await self.client.get(reverse("events:stream"), params)
        if response.status_code != 200 or not response.streaming:
            body = b"" if response.streaming else response.content
            raise AssertionError(f"the stream answered {response.status_code}: {body.decode(errors='replace')}")
        stream = EventStream(response.streaming_content)  # type: ignore[attr-defined]
        self._stack.push_async_callback(stream.aclose)
        return stream

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self._stack.aclose()
