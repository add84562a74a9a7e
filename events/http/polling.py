"""The long-poll: wait for the first events after ``since``, or time out.

Same ids and ``reset`` rules as the stream. Without ``since`` it waits for the
next event published after the request arrived (it reads the current id
first, then behaves as if that had been given). The server answers before
``EVENTS["LONGPOLL_TIMEOUT"]``, with no events and the ``last_id`` to send
next time, so no proxy ever times the request out.

Two steps: :func:`open_poll` subscribes and reads the history (what can fail,
and what the view answers errors for), then either answers at once or hands
back a :class:`WaitingPoll`. The view wraps that in a
:class:`LongPollResponse`, a streaming response whose one chunk is the answer,
so nothing waits in the view or the middleware chain: under the events
handler only the handler's own frame and the waiting poll stay while the
client waits, which is most of a poll's cost when thousands wait at once
(every object alive then is traversed by the garbage collector).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any, NamedTuple

from django.http import JsonResponse

from .. import metrics
from ..backends.active import Backend, get_backend, get_hub
from ..backends.connection import describe_error
from ..backends.errors import REDIS_ERRORS
from ..backends.history import Batch
from ..conf import conf
from ..core.messages import Message
from ..core.revocations import ENDED_RIGHTS, Access
from ..core.subscriber import Subscriber
from ..exceptions import HubUnavailable
from .direct import DirectResponse
from .errors import unavailable

logger = logging.getLogger(__name__)

# A long-poll answer's headers, however it is sent.
ANSWER_HEADERS = (("Content-Type", "application/json"), ("Cache-Control", "no-store"))

# Events in one long-poll answer, at most: a client that missed more gets
# the oldest ones and continues from the answer's ``last_id``.
MAX_EVENTS = 100


def answer_body(messages: Sequence[Message], last_id: str) -> bytes:
    """The JSON answer ``{"events": [...], "last_id": ...}``; each event's JSON is encoded once per process."""
    events = ", ".join([message.poll_json for message in messages])
    last = messages[-1].id if messages else last_id
    return f'{{"events": [{events}], "last_id": {json.dumps(last)}}}'.encode()


# What open_poll raises when the poll cannot wait (answered with a 503 by poll_refused).
POLL_REFUSALS: tuple[type[Exception], ...] = (HubUnavailable, *REDIS_ERRORS)


def poll_refused(exc: BaseException) -> JsonResponse:
    """The 503 of a long-poll that :func:`open_poll` could not start (``exc``: one of ``POLL_REFUSALS``)."""
    if isinstance(exc, HubUnavailable):
        return unavailable(f"Cannot wait for events now: {exc}. Retry later.")
    logger.warning("events: long-poll failed: %s", describe_error(exc))
    return unavailable(f"Redis is unreachable or busy ({type(exc).__name__}). Retry later.")


async def open_poll(topics: frozenset[str], since: str | None, access: Access | None = None) -> bytes | WaitingPoll:
    """The answer's body if there are events (or a reset) after ``since``, else the poll waiting for them.

    Raises HubUnavailable or one of ``REDIS_ERRORS``. A :class:`WaitingPoll`
    is attached to the hub until it is answered or closed.
    """
    backend = get_backend()
    if since is None:
        since = await backend.acurrent_id(topics)
    hub = get_hub()
    client = backend.new_subscriber(topics, conf.QUEUE_SIZE, is_stream=False)
    waiting = False
    try:
        # Registered first, so a revocation arriving from here on finds it.
        hub.revocations.register(client, access or Access())
        # Subscribe first, then read the history: nothing falls in between.
        await hub.attach(client)
        # The history after ``since``, in bounded batches, up to the first
        # batch with events on our topics; the backend sets the client's
        # position as it goes (only events after it are taken later).
        last_batch: Batch | None = None
        async with aclosing(backend.replay(client, since, hub.pubsub)) as batches:
            async for batch in batches:
                last_batch = batch
                if batch.reset is not None:
                    return answer_body([client.given_reset(batch.reset)], batch.last_id)
                if batch.events:
                    events = batch.events[:MAX_EVENTS]
                    metrics.EVENTS_DELIVERED.inc(len(events))
                    return answer_body(events, batch.last_id)
        waiting = True
        return WaitingPoll(backend, client, since, last_batch)
    finally:
        if not waiting:
            hub.detach(client)


class WaitingPoll:
    """A long-poll attached to the hub that found nothing after ``since``: its answer comes with the next events.

    Its ``LONGPOLL_TIMEOUT`` runs from here, not from when someone waits
    for the answer: a response that is never sent (a middleware replaced it,
    say, and nobody closed it) still leaves the hub then.
    """

    __slots__ = ("answering", "backend", "client", "last_batch", "since", "timer")

    def __init__(self, backend: Backend, client: Subscriber, since: str, last_batch: Batch | None) -> None:
        self.backend = backend
        self.client = client
        self.since = since
        self.last_batch = last_batch
        self.answering = False
        self.timer = asyncio.get_running_loop().call_later(conf.LONGPOLL_TIMEOUT, self._time_out)

    def _time_out(self) -> None:
        self.client.close("timeout")
        if not self.answering:
            self.close()

    async def answer(self) -> bytes:
        """Wait for events (until the poll's timeout); the answer's body. Detaches the poll.

        Revoked (or its token expired) while waiting, it answers at once with
        no events and the position to continue from: the next poll is
        authorized again with the client's current rights.
        """
        client = self.client
        self.answering = True
        try:
            while not client.pending and client.close_reason is None:
                await client.wait()
        finally:
            self.close()
        last_id = self.backend.poll_last_id(client, self.since, self.last_batch)
        if client.close_reason in ENDED_RIGHTS:
            return answer_body([], last_id)
        return answer_body(client.take()[:MAX_EVENTS], last_id)

    async def body(self) -> AsyncGenerator[bytes, None]:
        """The answer as a response body of one chunk (``answer`` detaches the poll; ``close`` if never started)."""
        yield await self.answer()

    def close(self) -> None:
        """Leave the hub (idempotent): a poll that is never answered must not hold its slot."""
        self.timer.cancel()
        get_hub().detach(self.client)


class PollAnswer(NamedTuple):
    """A long-poll's answer for the events handler to send: its start message and its body, or the poll to wait for."""

    start: dict[str, Any]
    body: bytes | WaitingPoll


class LongPollResponse(DirectResponse):
    """The JSON answer of a :class:`WaitingPoll`: a body of one chunk, known once events come or the poll times out.

    A streaming response (``direct.py``), so no middleware takes the body
    for known (an ``ETag`` of an empty body, say). The events handler awaits
    :meth:`WaitingPoll.answer` itself and sends it with a ``Content-Length``;
    under any other handler Django streams the one chunk.
    """

    def __init__(self, poll: WaitingPoll) -> None:
        super().__init__(poll.body(), headers=dict(ANSWER_HEADERS))
        self.poll = poll

    def close(self) -> None:
        # Django closes every response at the end of its request, sent or
        # not (a middleware may have replaced it): the poll leaves the hub.
        self.poll.close()
        super().close()
