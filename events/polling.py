"""The long-poll: wait for the first events after ``since``, or time out.

Same ids and ``reset`` rules as the stream. Without ``since`` it waits for the
next event published after the request arrived (it reads the current id
first, then behaves as if that had been given). The server answers before
``EVENTS["LONGPOLL_TIMEOUT"]``, with no events and the ``last_id`` to send
next time, so no proxy ever times the request out.
"""

from __future__ import annotations

import asyncio
from typing import Any

from . import history, metrics
from .conf import conf
from .connection import get_async_client
from .hub import get_hub
from .ids import parse_id
from .messages import Message
from .subscriber import Subscriber

# Events in one long-poll answer, at most: a client that missed more gets
# the oldest ones and continues from the answer's ``last_id``.
MAX_EVENTS = 100


def _answer(messages: list[Message], last_id: str) -> dict[str, Any]:
    return {"events": [message.as_dict() for message in messages], "last_id": messages[-1].id if messages else last_id}


async def long_poll(topics: frozenset[str], since: str | None) -> dict[str, Any]:
    """The JSON answer of one long-poll. Raises HubUnavailable or redis.RedisError."""
    redis_client = get_async_client()
    if since is None:
        since = await history.read_current_id(redis_client)
    hub = get_hub()
    client = Subscriber(topics, conf.QUEUE_SIZE, is_stream=False)
    try:
        # Subscribe first, then read the history: nothing falls in between.
        await hub.attach(client)
        # The history after ``since``, in bounded batches, up to the first
        # batch with events on our topics.
        while True:
            batch = await history.read_batch(redis_client, since, topics)
            if batch.reset is not None:
                metrics.CLIENTS_RESET.inc()
                return _answer([batch.reset], batch.last_id)
            if batch.events:
                events = batch.events[:MAX_EVENTS]
                metrics.EVENTS_DELIVERED.inc(len(events))
                return _answer(events, batch.last_id)
            if not batch.more:
                break
            since = batch.position

        client.last_key = parse_id(since)
        timer = asyncio.get_running_loop().call_later(conf.LONGPOLL_TIMEOUT, client.close, "timeout")
        try:
            while not client.pending and client.close_reason is None:
                await client.wait()
        finally:
            timer.cancel()
        newest = max(since, batch.last_id, key=parse_id)
        return _answer(client.take()[:MAX_EVENTS], newest)
    finally:
        hub.detach(client)
