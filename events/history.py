"""History: reading the bounded Redis Stream to replay what a client missed.

One Lua script reads, atomically, the stream's last generated id, the largest
id trimmed away (``max-deleted-entry-id``, Redis >= 7.0), whether the client's
id exists, and the entries after it on the wanted topics. From those:

- the id is newer than anything generated, or in range but absent: it is
  *unknown* (another Redis, a flushed Redis, a made-up id) -> reset;
- events after the id were trimmed away: it is *expired* -> reset;
- otherwise the entries after it are the complete, ordered replay.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import redis.asyncio

from .connection import history_key
from .ids import ZERO_ID, parse_id
from .messages import Message

# KEYS[1]: history. ARGV[1]: the client's id, or "$" for "now". ARGV[2..]: topics.
READ_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'0-0', '0-0', 0, {}}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, trimmed = '0-0', '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1]
  elseif info[i] == 'max-deleted-entry-id' then trimmed = info[i + 1] end
end
local since = ARGV[1]
if since == '$' then
  return {last, trimmed, 1, {}}
end
local known = 1
if since ~= '0-0' then
  known = #redis.call('XRANGE', KEYS[1], since, since)
end
local wanted = {}
for i = 2, #ARGV do wanted[ARGV[i]] = true end
local found = {}
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '(' .. since, '+')) do
  if wanted[entry[2][2]] then found[#found + 1] = entry end
end
return {last, trimmed, known, found}
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
    raw_last, raw_trimmed, known, entries = await client.register_script(READ_SCRIPT)(
        keys=[history_key()], args=[since, *wanted]
    )
    last_id, trimmed_id = _decode(raw_last), _decode(raw_trimmed)
    since_key, last_key = parse_id(since), parse_id(last_id)
    if since_key > last_key:
        return Replay(last_id, reset=Message.reset(last_id, "unknown-id"))
    if since_key < parse_id(trimmed_id):
        return Replay(last_id, reset=Message.reset(last_id, "history-expired"))
    if since != ZERO_ID and not known and since_key != parse_id(trimmed_id):
        return Replay(last_id, reset=Message.reset(last_id, "unknown-id"))
    return Replay(last_id, events=[Message.from_history(id, fields) for id, fields in entries])


async def current_id(client: redis.asyncio.Redis) -> str:
    """The id of the newest event ever added (``0-0`` before the first)."""
    raw_last, _, _, _ = await client.register_script(READ_SCRIPT)(keys=[history_key()], args=["$"])
    return _decode(raw_last)
