"""The body of one SSE response: an async generator of bytes.

Order of work, which is what makes resuming exact:

1. send the first bytes at once (``retry:`` hint and a comment), so proxies
   and browsers see the stream open;
2. attach to the hub, which returns once the topics are subscribed in Redis;
3. read the history after the client's ``Last-Event-ID`` (if any) and send
   it (or a ``reset``), in bounded batches (``history.BATCH`` entries and
   ``history.BATCH_BYTES`` bytes per Redis call), each read once the socket
   has taken the previous one; live events that arrived meanwhile are queued, and the ones
   already replayed are dropped by id;
4. forward live events, heartbeats and, at the end, a closing comment.

When the server cannot serve (Redis down, too many streams, shutting down),
the stream says why in a comment and ends normally: a plain ``EventSource``
retries after the ``retry:`` delay, where a non-200 status would stop it for
good. Cleanup (``finally``) only detaches from the hub: synchronous, cheap and
idempotent, as a cancelled or garbage-collected generator needs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from .. import metrics
from ..backends.active import Backend, get_backend, get_hub
from ..backends.errors import REDIS_ERRORS
from ..conf import conf
from ..core import sse
from ..core.revocations import Access
from ..core.subscriber import HEARTBEAT, Subscriber
from ..exceptions import HubUnavailable
from ..internals import uvicorn_raw_writer
from ..serving.asgi_types import Send
from .direct import DirectResponse

logger = logging.getLogger(__name__)

# The name of the event that opens a stream, when asked for (see open_frame).
OPEN_EVENT = "open"
# The comment every stream starts with (with its retry hint), before any Redis work.
STREAM_OPEN = sse.encode_comment("stream open")


# A stream's response headers. ``X-Accel-Buffering``: tell nginx not to buffer
# it (the deploy config also says so); ``Content-Encoding``: see below.
STREAM_HEADERS = (
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-cache"),
    ("X-Accel-Buffering", "no"),
    ("Content-Encoding", "identity"),
)


class EventStreamResponse(DirectResponse):
    """A ``text/event-stream`` response: the live stream of ``topics`` after ``last_event_id``.

    Django's ``StreamingHttpResponse`` wraps an async iterator in two more
    async generators (to convert sync iterators and coerce each part to
    bytes). Every frame would pass through both; ours are bytes already, so
    the handler iterates our generator directly. Django still closes it with
    ``aclosing()``, which runs its ``finally`` on disconnect.

    Served by ``handlers.py`` (the ``events_asgi_app``), the response is sent
    by ``handlers.py`` through a :class:`DirectStream` instead, which also lets the hub write
    live frames straight to the client (see ``subscriber.py``).

    A middleware that replaces ``streaming_content`` (to wrap, count or
    rewrite the body) is honoured (``direct.py``): the body is then read
    through its replacement (Django's sending, not the direct one), and our
    generator is still closed when the response is.

    Compression is refused: ``Content-Encoding: identity`` makes Django's
    ``GZipMiddleware`` (and nginx's ``gzip``) leave the response alone, the
    way they leave an already encoded body. A compressor buffers, which would
    hold events back, and SSE frames are tiny anyway.
    """

    def __init__(
        self, topics: frozenset[str], last_event_id: str | None, access: Access | None = None, *, announce: bool = False
    ) -> None:
        self.subscriber = get_backend().new_subscriber(topics, conf.QUEUE_SIZE, is_stream=True)
        stream = event_stream(self.subscriber, last_event_id, access or Access(), announce=announce)
        (_, content_type), *others = STREAM_HEADERS
        super().__init__(stream, content_type=content_type)
        self._stream = stream
        for name, value in others:
            self[name] = value

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        return self._through_middleware() if self.content_replaced else self._stream

    async def _through_middleware(self) -> AsyncGenerator[bytes, None]:
        try:
            async for part in super().__aiter__():
                yield part
        finally:
            # The middleware's generators are left to the garbage collector;
            # ours holds the hub slot and the subscriptions, so close it now.
            await self._stream.aclose()

    def direct(self) -> DirectStream:
        """What sending the stream directly needs, so the response itself need not stay in memory."""
        return DirectStream(self.start_message(), self._stream, self.subscriber)


class DirectStream:
    """An :class:`EventStreamResponse` to be sent straight over ASGI (what Django's ``send_response`` would do).

    The sender (``handlers.py``) sends :meth:`take_start`, calls
    :meth:`attach`, then sends each chunk of :attr:`stream` and the end of
    the body. It does so in its own frame, not in a method here: that frame
    stays as long as the stream is open, and a second one would too.
    """

    __slots__ = ("start", "stream", "subscriber")

    def __init__(self, start: dict[str, Any], stream: AsyncGenerator[bytes, None], subscriber: Subscriber) -> None:
        self.start: dict[str, Any] | None = start
        self.stream = stream
        self.subscriber = subscriber

    def take_start(self) -> dict[str, Any]:
        """The ``http.response.start`` message, given once (the headers, about 700 bytes, are not kept)."""
        start, self.start = self.start, None
        assert start is not None, "take_start() called twice"
        return start

    def attach(self, send: Send) -> None:
        """From now on the hub may write to ``send`` while the stream waits (after the start was sent)."""
        self.subscriber.send = send
        self.subscriber.raw = uvicorn_raw_writer(send)


def open_direct_stream(
    topics: frozenset[str], last_event_id: str | None, access: Access, *, announce: bool
) -> DirectStream:
    """What :meth:`EventStreamResponse.direct` gives, without the response: for a stream served without Django."""
    subscriber = get_backend().new_subscriber(topics, conf.QUEUE_SIZE, is_stream=True)
    stream = event_stream(subscriber, last_event_id, access, announce=announce)
    headers = [(name.encode(), value.encode()) for name, value in STREAM_HEADERS]
    return DirectStream({"type": "http.response.start", "status": 200, "headers": headers}, stream, subscriber)


def retry_hint() -> bytes:
    """The ``retry:`` field, with up to +50% jitter so reconnects do not arrive as a storm."""
    base = conf.RETRY_MS
    # random.randint(0, base // 2), without its Python-level layers.
    return sse.encode_retry(base + int(random.random() * (base // 2 + 1)))


def open_frame(position: str | None, token_expires: float | None = None) -> bytes:
    """``event: open``: the stream is subscribed and events can flow (sent when asked with ``open_event=1``).

    A comment is invisible to JavaScript; this event is not, so a client can
    tell a stream that works from one whose body a proxy holds back. Its
    ``id:`` is the position the stream resumes from (the client's own, or
    "now" for a new one), so a client that reconnects from it misses nothing.
    A stream opened with a signed token says when the token expires (Unix
    seconds, ``{"token_expires": ...}``): the stream ends then, and the
    client fetches a fresh token before reconnecting.
    """
    data = "null" if token_expires is None else json.dumps({"token_expires": int(token_expires)})
    return sse.encode_event(f'{{"topic": null, "data": {data}}}', id=position or "", event=OPEN_EVENT)


async def replay_chunks(backend: Backend, client: Subscriber, resume_from: str | None) -> AsyncGenerator[bytes, None]:
    """The history after ``resume_from``, one chunk per batch (each batch one Redis call).

    The backend sets the client's position as it goes, so live events queued
    meanwhile that the replay covered are dropped by id. Redis errors propagate.
    """
    loop = asyncio.get_running_loop()
    async with aclosing(backend.replay(client, resume_from, get_hub().pubsub)) as batches:
        async for batch in batches:
            if batch.reset is not None:
                chunk = client.given_reset(batch.reset).frame
            else:
                chunk = b"".join(message.frame for message in batch.events)
                client.delivered += len(batch.events)
                metrics.EVENTS_DELIVERED.inc(len(batch.events))
            if chunk:
                client.sending_since = loop.time()
                yield chunk
                if batch.more:
                    # An empty chunk: the server sends it once the socket has
                    # drained, so the next batch is read only then (a client
                    # that does not read holds one batch in memory, not the
                    # whole replay).
                    del chunk, batch
                    yield b""
                client.sending_since = None


async def event_stream(
    client: Subscriber, last_event_id: str | None, access: Access, *, announce: bool = False
) -> AsyncGenerator[bytes, None]:
    hub = get_hub()
    backend = get_backend()
    topics = client.topics
    loop = asyncio.get_running_loop()
    client.task = asyncio.current_task()
    opened_at = loop.time()
    # Why the stream ended, for the log line; a client that goes away leaves it.
    end = "client-gone"
    try:
        # First bytes at once, before any Redis work, so the stream is seen open.
        yield retry_hint() + STREAM_OPEN
        try:
            # Without Last-Event-ID, a Redis Cluster client still needs a
            # position in each group: "now", read before subscribing, so that
            # nothing published in between is missed (single Redis: None).
            resume_from = last_event_id or await backend.start_position(topics)
            if announce and resume_from is None:
                # The open event names the position to resume from: read "now"
                # before subscribing; the replay then covers what comes in between.
                resume_from = await backend.acurrent_id(topics)
        except REDIS_ERRORS as exc:
            end = "redis-error"
            yield sse.encode_comment(f"unavailable: cannot read positions ({type(exc).__name__}); retry later")
            return
        try:
            # Registered first, so a revocation arriving from here on finds it.
            hub.revocations.register(client, access)
            await hub.attach(client)
        except HubUnavailable as exc:
            end = "refused"
            logger.info("events.stream refused reason=%r topics=%s", str(exc), ",".join(sorted(topics)))
            yield sse.encode_comment(f"unavailable: {exc}; retry later")
            return
        if conf.MAX_STREAM_AGE > 0:
            client.deadline = opened_at + conf.MAX_STREAM_AGE * random.uniform(0.85, 1.0)
        if logger.isEnabledFor(logging.INFO):  # its arguments cost as much as the rest of the set-up's logging
            logger.info(
                "events.stream open topics=%s last_event_id=%s streams=%d",
                ",".join(sorted(topics)),
                last_event_id,
                len(hub.streams),
            )
        if announce:
            yield open_frame(resume_from, access.token_expires)

        if resume_from is not None:  # else the stream starts live: nothing to replay
            try:
                # The history after the client's position, in bounded batches.
                async with aclosing(replay_chunks(backend, client, resume_from)) as replay:
                    async for chunk in replay:
                        yield chunk
            except REDIS_ERRORS as exc:
                end = "redis-error"
                yield sse.encode_comment(f"unavailable: cannot read history ({type(exc).__name__}); retry later")
                return
            # This frame lives as long as the stream: keep neither the finished
            # replay (nor the event loop's weak reference to it) nor its last chunk.
            del replay
        chunk = b""

        while True:
            await client.wait()
            # A live frame the hub wrote directly, to a slow client, comes first.
            await client.flush()
            if client.close_reason is not None:
                end = client.close_reason
                yield retry_hint() + sse.encode_comment(f"closing: {client.close_reason}; reconnect")
                return
            messages = client.take()
            chunk = b"".join([message.frame for message in messages])
            if client.heartbeat_due:
                client.heartbeat_due = False
                chunk += HEARTBEAT
            if chunk:
                client.delivered += len(messages)
                client.sending_since = loop.time()
                yield chunk
                client.sending_since = None
    finally:
        hub.detach(client)
        if client.close_reason == "write-timeout":
            end = "write-timeout"
        if end != "refused" and logger.isEnabledFor(logging.INFO):
            logger.info(
                "events.stream closed reason=%s seconds=%.1f delivered=%d topics=%s",
                end,
                loop.time() - opened_at,
                client.delivered,
                ",".join(sorted(topics)),
            )
