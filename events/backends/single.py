"""The single-node backend: one Redis (``redis://``, ``rediss://``, ``unix://``).

What the rest of the app asks of Redis, done the way it always was: the
publish script (``XADD`` to ``P:history`` + ``PUBLISH``), one history stream,
one pub/sub connection per worker (``reader.py``, with :class:`SingleDialect`) and plain ``<ms>-<seq>`` ids.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Collection, Iterable
from contextlib import aclosing
from functools import partial
from typing import Any

import redis.asyncio
from redis.asyncio.client import PubSub

from ..conf import conf
from ..core.ids import EventKey, format_key, is_valid_id, parse_id
from ..core.messages import Message
from ..core.subscriber import Subscriber
from . import history
from .connection import (
    channel_name,
    channel_prefix,
    get_async_client,
    get_sync_client,
    new_hub_command_client,
    new_pubsub_client,
)
from .reader import HubConnection, HubSide, Reader, StreamKey
from .scripts import LuaScript
from .shared_reads import shared_reads

# KEYS[1]: history stream, KEYS[2]: newest-id index (history.py). ARGV: max
# length, topic, event, JSON data, channel, most topics in the index.
PUBLISH_SCRIPT = (
    """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 't', ARGV[2], 'e', ARGV[3], 'd', ARGV[4])
redis.call('PUBLISH', ARGV[5], id .. '\\n' .. ARGV[3] .. '\\n' .. ARGV[4])
"""
    + history.INDEX_SCRIPT
    + """
return id
"""
)
_PUBLISH = LuaScript(PUBLISH_SCRIPT)

# Longest id we accept: two 20-digit numbers and a dash.
MAX_ID_LENGTH = 41


class SingleDialect:
    """Classic pub/sub on ``P:topic:<topic>`` channels, one history stream (key None) for every topic."""

    MESSAGE = "message"
    SUBSCRIBED = "subscribe"
    UNSUBSCRIBED = "unsubscribe"

    def __init__(self) -> None:
        self._prefix = channel_prefix()
        self._prefix_length = len(self._prefix.encode())

    def topic_of(self, channel: bytes) -> str:
        return channel[self._prefix_length :].decode()

    def stream_of(self, topic: str) -> None:
        return None

    def message(self, topic: str, data: bytes) -> Message:
        return Message.from_pubsub(topic, data)

    async def subscribe(self, pubsub: PubSub, topics: list[str]) -> None:
        await pubsub.subscribe(*[self._prefix + topic for topic in topics])

    async def unsubscribe(self, pubsub: PubSub, topics: list[str]) -> None:
        await pubsub.unsubscribe(*[self._prefix + topic for topic in topics])

    async def measure(
        self, client: redis.asyncio.Redis, streams: Collection[StreamKey]
    ) -> tuple[int, dict[StreamKey, EventKey]]:
        newest = parse_id(await history.read_current_id(client))
        seconds, microseconds = await client.time()
        return seconds * 1000 + microseconds // 1000, {None: newest}

    async def read_after(
        self, client: redis.asyncio.Redis, stream: StreamKey, since: EventKey, topics: list[str]
    ) -> AsyncGenerator[history.Batch, None]:
        async with aclosing(history.read_after(client, format_key(since), topics)) as batches:
            async for batch in batches:
                yield batch

    def reset(self, stream: StreamKey, key: EventKey, reason: str) -> Message:
        return Message.reset(format_key(key), reason)


def _publish_args(topic: str, event: str, payload: str) -> list[Any]:
    return [conf.HISTORY, topic, event, payload, channel_name(topic), history.index_topics(conf.HISTORY)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _shared_batch(client: redis.asyncio.Redis, position: str, topics: Iterable[str]) -> Awaitable[history.Batch]:
    """``history.read_batch``, shared by clients asking the same at the same moment.

    All re-polling after one event ask the same: see shared_reads.py. They
    are all subscribed already, as that module requires.
    """
    key = ("batch", position, frozenset(topics))
    return shared_reads().read(key, partial(history.read_batch, client, position, topics))


class SingleNodeBackend:
    max_id_length = MAX_ID_LENGTH

    def is_valid_id(self, value: str) -> bool:
        return is_valid_id(value)

    def publish(self, topic: str, event: str, payload: str) -> str:
        return _text(_PUBLISH.run(get_sync_client(), history.keys(), _publish_args(topic, event, payload)))

    async def apublish(self, topic: str, event: str, payload: str) -> str:
        return _text(await _PUBLISH.arun(get_async_client(), history.keys(), _publish_args(topic, event, payload)))

    def current_id(self, topics: Iterable[str] | None) -> str:
        return history.decode(history.READ.run(get_sync_client(), history.keys(), history.NOW)[0])

    async def acurrent_id(self, topics: Iterable[str] | None) -> str:
        # Asked for at the same moment (a burst of long-polls): one read (shared_reads.py).
        current: str = await shared_reads().read("current", partial(history.read_current_id, get_async_client()))
        return current

    async def start_position(self, topics: frozenset[str]) -> str | None:
        """Where a stream without ``Last-Event-ID`` starts: live, no Redis work."""
        return None

    def new_subscriber(self, topics: frozenset[str], queue_size: int, *, is_stream: bool) -> Subscriber:
        return Subscriber(topics, queue_size, is_stream=is_stream)

    async def replay(
        self, client: Subscriber, since: str | None, live: HubConnection | None = None
    ) -> AsyncGenerator[history.Batch, None]:
        """What ``client`` missed after ``since``, batch by batch (None: nothing, no Redis work).

        Sets the client's position as it goes, so live events the replay
        covers are dropped; stops once the client is closed. Nothing to read
        either when ``live``, the connection the client is attached through,
        has every event after ``since`` on its way (a long-poll re-armed
        after its answer, say).
        """
        if since is None or client.close_reason is not None:
            return
        client.last_key = parse_id(since)
        if isinstance(live, Reader) and live.has_all_after(client.topics, client.last_key):
            return
        async with aclosing(
            history.read_after(get_async_client(), since, client.topics, read=_shared_batch)
        ) as batches:
            async for batch in batches:
                client.replayed(batch)
                yield batch
                if client.close_reason is not None:
                    return

    def poll_last_id(self, client: Subscriber, since: str, batch: history.Batch | None) -> str:
        """The ``last_id`` of a long-poll that got no event."""
        return since if batch is None else max(since, batch.last_id, key=parse_id)

    def new_pubsub(self, hub: HubSide) -> Reader:
        return Reader(hub, SingleDialect(), new_pubsub_client(), new_hub_command_client())

    async def ping(self) -> bool:
        return bool(await get_async_client().ping())
