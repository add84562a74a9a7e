"""The long-poll: wait for the first events after ``since``, or time out.

Same ids and ``reset`` rules as the stream. Without ``since`` it waits for the
next event published after the request arrived (it reads the current id
first, then behaves as if that had been given). The server answers before
``EVENTS["LONGPOLL_TIMEOUT"]``, with no events and the ``last_id`` to send
next time, so no proxy ever times the request out.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

from .. import metrics
from ..backends.active import get_backend, get_hub
from ..backends.history import Batch
from ..conf import conf
from ..core.messages import Message
from ..core.revocations import ENDED_RIGHTS, Access

# Events in one long-poll answer, at most: a client that missed more gets
# the oldest ones and continues from the answer's ``last_id``.
MAX_EVENTS = 100


def _answer(messages: list[Message], last_id: str) -> dict[str, Any]:
    return {"events": [message.as_dict() for message in messages], "last_id": messages[-1].id if messages else last_id}


async def long_poll(topics: frozenset[str], since: str | None, access: Access | None = None) -> dict[str, Any]:
    """The JSON answer of one long-poll. Raises HubUnavailable or one of ``REDIS_ERRORS``.

    Revoked (or its token expired) while waiting, it answers at once with no
    events and the position to continue from: the next poll is authorized
    again with the client's current rights.
    """
    backend = get_backend()
    if since is None:
        since = await backend.acurrent_id(topics)
    hub = get_hub()
    client = backend.new_subscriber(topics, conf.QUEUE_SIZE, is_stream=False)
    try:
        # Registered first, so a revocation arriving from here on finds it.
        hub.revocations.register(client, access or Access())
        # Subscribe first, then read the history: nothing falls in between.
        await hub.attach(client)
        # The history after ``since``, in bounded batches, up to the first
        # batch with events on our topics; the backend sets the client's
        # position as it goes (only events after it are taken below).
        last_batch: Batch | None = None
        async with aclosing(backend.replay(client, since)) as batches:
            async for batch in batches:
                last_batch = batch
                if batch.reset is not None:
                    return _answer([client.given_reset(batch.reset)], batch.last_id)
                if batch.events:
                    events = batch.events[:MAX_EVENTS]
                    metrics.EVENTS_DELIVERED.inc(len(events))
                    return _answer(events, batch.last_id)

        timer = asyncio.get_running_loop().call_later(conf.LONGPOLL_TIMEOUT, client.close, "timeout")
        try:
            while not client.pending and client.close_reason is None:
                await client.wait()
        finally:
            timer.cancel()
        if client.close_reason in ENDED_RIGHTS:
            return _answer([], backend.poll_last_id(client, since, last_batch))
        return _answer(client.take()[:MAX_EVENTS], backend.poll_last_id(client, since, last_batch))
    finally:
        hub.detach(client)
