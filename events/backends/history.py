"""History: reading the bounded Redis Stream to replay what a client missed.

A replay is read in batches: one Lua script run reads, atomically, the
stream's last generated id, its first retained id, whether anything was ever
trimmed away, whether the client's id is in the stream, and at most
:data:`BATCH` entries after it, of which it returns those on the wanted
topics. Whatever the history's length, one run costs Redis a few
milliseconds; a long replay is several runs, each resuming where the previous
one stopped (other clients' commands run in between). From each batch:

- an id that is in the stream (or ``0-0`` with nothing trimmed): the entries
  after it are the complete, ordered replay;
- an id older than the first retained entry, after trimming: events after it
  may be gone, it is *expired* -> reset;
- any other id (newer than anything generated, in range but absent, from a
  flushed or another Redis, beyond the largest id Redis can hold): it is
  *unknown* -> reset.

A batch that resumes from an entry trimmed away meanwhile is *expired* too,
so a replay never silently skips what the trimming took.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import redis.asyncio

from ..core.ids import MAX_ID, ZERO_ID, parse_id
from ..core.messages import Message, skip_malformed
from .connection import history_key
from .scripts import LuaScript

# Entries read per script run (all topics; the wanted ones are returned).
# About 3 ms of Redis time with 1 KB payloads: a resume never blocks Redis
# for long, however long the history is.
BATCH = 500

# KEYS[1]: history. ARGV[1]: the client's id, or "$" for "now". ARGV[2]: at
# most this many entries to read. ARGV[3..]: topics.
# Returns {last generated id, first retained id or "", trimmed (0/1), known
# (0/1), id read up to, more entries after it (0/1), entries on the topics}.
READ_SCRIPT = (
    """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'0-0', '', 0, 0, ARGV[1], 0, {}}
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
  return {last, first, trimmed, 1, last, 0, {}}
end
local known = 0
if since ~= '0-0' then
  known = #redis.call('XRANGE', KEYS[1], since, since)
end
local range = {}
-- Nothing can follow the largest id (and Redis refuses '(' on it).
if since ~= '"""
    + MAX_ID
    + """' then
  range = redis.call('XRANGE', KEYS[1], '(' .. since, '+', 'COUNT', ARGV[2])
end
local wanted = {}
for i = 3, #ARGV do wanted[ARGV[i]] = true end
local found = {}
for _, entry in ipairs(range) do
  local fields = entry[2]
  for j = 1, #fields - 1, 2 do
    if fields[j] == 't' then
      if wanted[fields[j + 1]] then found[#found + 1] = entry end
      break
    end
  end
end
local position, more = since, 0
if #range > 0 then position = range[#range][1] end
if #range >= tonumber(ARGV[2]) then more = 1 end
return {last, first, trimmed, known, position, more, found}
"""
)
READ = LuaScript(READ_SCRIPT)
# The script's arguments that ask for the newest id only.
NOW = ("$", 0)


@dataclass
class Batch:
    """One bounded read of the history after an id: either ``reset`` or events (maybe none)."""

    # The newest id ever added, when this batch was read.
    last_id: str
    # Read up to here: the next batch starts after it (when ``more``).
    position: str
    # Whether the history goes on after ``position``.
    more: bool = False
    events: list[Message] = field(default_factory=list)
    reset: Message | None = None


def decode(value: bytes | str) -> str:
    """A Redis reply as text (bytes decoded, a string as it is)."""
    return value.decode() if isinstance(value, bytes) else value


def _parse_entries(entries: list[tuple[bytes, list[bytes]]]) -> list[Message]:
    messages = []
    for id, fields in entries:
        try:
            messages.append(Message.from_history(id, fields))
        except (ValueError, TypeError) as exc:
            skip_malformed(f"history entry {decode(id)}", exc)
    return messages


async def read_batch(client: redis.asyncio.Redis, since: str, topics: Iterable[str], limit: int = BATCH) -> Batch:
    """The retained events after ``since`` on ``topics`` among the next ``limit`` entries, or a reset.

    Continue with ``read_batch(client, batch.position, ...)`` while ``batch.more``.
    """
    wanted = list(topics)
    if not wanted:
        return Batch(last_id=since, position=since)
    raw_last, raw_first, trimmed, known, raw_position, more, entries = await READ.arun(
        client, [history_key()], [since, limit, *wanted]
    )
    last_id = decode(raw_last)
    if known or (since == ZERO_ID and not trimmed):
        return Batch(last_id, decode(raw_position), bool(more), events=_parse_entries(entries))
    first_id = decode(raw_first)
    if trimmed and (since == ZERO_ID or (first_id and parse_id(since) < parse_id(first_id))):
        return Batch(last_id, last_id, reset=Message.reset(last_id, "history-expired"))
    return Batch(last_id, last_id, reset=Message.reset(last_id, "unknown-id"))


# How read_after reads one batch: read_batch, or one that shares reads.
ReadBatch = Callable[[redis.asyncio.Redis, str, Iterable[str]], Awaitable[Batch]]


async def read_after(
    client: redis.asyncio.Redis, since: str, topics: Iterable[str], *, read: ReadBatch | None = None
) -> AsyncGenerator[Batch, None]:
    """The history after ``since`` on ``topics``, batch by batch, to its end; a reset is the last batch.

    ``read`` reads each batch (default :func:`read_batch`; it is given
    ``topics`` as they are). Close the generator (``contextlib.aclosing``)
    when not reading to the end.
    """
    read = read or read_batch
    position = since
    while True:
        batch = await read(client, position, topics)
        yield batch
        if batch.reset is not None or not batch.more:
            return
        position = batch.position


async def read_current_id(client: redis.asyncio.Redis) -> str:
    """The id of the newest event ever added (``0-0`` before the first)."""
    return decode((await READ.arun(client, [history_key()], NOW))[0])
