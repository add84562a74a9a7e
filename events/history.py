"""History: reading the bounded Redis Stream to replay what a client missed.

One Lua script reads, atomically, the stream's last generated id, its first
retained id, whether anything was ever trimmed away, whether the client's id
is in the stream, and the entries after it on the wanted topics. From those:

- an id that is in the stream (or ``0-0`` with nothing trimmed): the entries
  after it are the complete, ordered replay;
- an id older than the first retained entry, after trimming: events after it
  may be gone, it is *expired* -> reset;
- any other id (newer than anything generated, in range but absent, from a
  flushed or another Redis): it is *unknown* -> reset.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import redis.asyncio

from .connection import get_async_client, get_sync_client, history_key
from .ids import ZERO_ID, parse_id
from .messages import Message

# KEYS[1]: history. ARGV[1]: the client's id, or "$" for "now". ARGV[2..]: topics.
# Returns {last generated id, first retained id or "", trimmed (0/1), known (0/1), entries}.
READ_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'0-0', '', 0, 0, {}}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, first, length, added = '0-0', '', 0, 0
for i = 1, #info, 2 do
  local name = info[i]
  if name == 'last-generated-id' then last = info[i + 1]
  elseif name == 'first-entry' and info[i + 1] then first = info[i + 1][1]
  elseif name == 'length' then length = info[i + 1]
  elseif name == 'entries-added' then added = info[i + 1] end
end
local trimmed = 0
if added > length then trimmed = 1 end
local since = ARGV[1]
if since == '$' then
  return {last, first, trimmed, 1, {}}
end
local known = 0
if since ~= '0-0' then
  known = #redis.call('XRANGE', KEYS[1], since, since)
end
local wanted = {}
for i = 2, #ARGV do wanted[ARGV[i]] = true end
local found = {}
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '(' .. since, '+')) do
  if wanted[entry[2][2]] then found[#found + 1] = entry end
end
return {last, first, trimmed, known, found}
"""


@dataclass
class Replay:
    """What a client gets on resuming: either ``reset`` or the events it missed."""

    last_id: str
    events: list[Message] = field(default_factory=list)
    reset: Message | None = None


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def read_after(client: redis.asyncio.Redis, since: str, topics: Iterable[str]) -> Replay:
    """Every retained event after ``since`` on ``topics``, in order, or a reset."""
    wanted = list(topics)
    if not wanted:
        return Replay(last_id=since)
    raw_last, raw_first, trimmed, known, entries = await client.register_script(READ_SCRIPT)(
        keys=[history_key()], args=[since, *wanted]
    )
    last_id = _decode(raw_last)
    if known or (since == ZERO_ID and not trimmed):
        return Replay(last_id, events=[Message.from_history(id, fields) for id, fields in entries])
    first_id = _decode(raw_first)
    if trimmed and (since == ZERO_ID or (first_id and parse_id(since) < parse_id(first_id))):
        return Replay(last_id, reset=Message.reset(last_id, "history-expired"))
    return Replay(last_id, reset=Message.reset(last_id, "unknown-id"))


async def read_current_id(client: redis.asyncio.Redis) -> str:
    """The id of the newest event ever added (``0-0`` before the first)."""
    raw_last, *_ = await client.register_script(READ_SCRIPT)(keys=[history_key()], args=["$"])
    return _decode(raw_last)


def current_id() -> str:
    """The id of the newest event on any topic (``0-0`` before the first).

    Render it into a page and have the client resume from it: then nothing
    published between rendering and subscribing is missed.
    """
    raw_last, *_ = get_sync_client().register_script(READ_SCRIPT)(keys=[history_key()], args=["$"])
    return _decode(raw_last)


async def acurrent_id() -> str:
    """Async version of :func:`current_id`."""
    return await read_current_id(get_async_client())
