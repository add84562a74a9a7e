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
from .connection import history_key, newest_key
from .scripts import LuaScript

# Entries read per script run (all topics; the wanted ones are returned).
# About 3 ms of Redis time with 1 KB payloads: a resume never blocks Redis
# for long, however long the history is.
BATCH = 500
# Bytes of entries read per script run, at most (about: the entry that
# crosses the bound is the last): one batch is what a stream holds in memory
# and writes as one chunk, so 60 KB events make batches of 16, not 500.
BATCH_BYTES = 1024 * 1024

# The per-topic newest-id index (a hash, written by the publish scripts in
# the same run as the XADD): topic -> id of its newest event, plus "-last"
# (the newest id on any topic) and "-first" (the first id it indexed; it
# knows every event from there on). Topics never start with "-". A read
# after an id that the index covers, on topics with nothing newer, is
# answered from it and one check that the id is in the history, whatever the
# history holds (a long-poll on a quiet topic). The index is renewed (emptied, "-first"
# moved on) when it holds more than INDEX_TOPICS(history) topics, so it stays
# bounded; positions before its "-first" are read from the history as before.
#
# A part of both publish scripts, after the XADD that made ``id``. KEYS[2]:
# the index; ARGV[2]: the topic; ARGV[6]: most topics kept.
INDEX_SCRIPT = """
local added = redis.call('HSET', KEYS[2], ARGV[2], id, '-last', id)
if added == 2 then
  redis.call('HSET', KEYS[2], '-first', id)
elseif added == 1 and redis.call('HLEN', KEYS[2]) > tonumber(ARGV[6]) then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], ARGV[2], id, '-last', id, '-first', id)
end
"""


def index_topics(history: int) -> int:
    """Topics the index keeps before it is renewed: more than a history of ``history`` events can name."""
    return max(2 * history, 1024)


# KEYS[1]: history, KEYS[2]: the index. ARGV[1]: the client's id, or "$"
# for "now". ARGV[2]: at most this many entries to read. ARGV[3]: at most
# (about) this many bytes of entries to read. ARGV[4..]: topics.
# Returns {last generated id, first retained id or "", trimmed (0/1), known
# (0/1), id read up to, more entries after it (0/1), entries on the topics}.
READ_SCRIPT = (
    """
local function digits(text)
  local stripped = string.gsub(text, '^0+', '')
  if stripped == '' then return '0' end
  return stripped
end
local function less(x, y)
  if #x ~= #y then return #x < #y end
  return x < y
end
-- Whether id a comes before id b (ids are two integers too long for Lua numbers).
local function before(a, b)
  local ams, aseq = string.match(a, '^(%d+)%-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)%-(%d+)$')
  ams, bms = digits(ams), digits(bms)
  if ams ~= bms then return less(ams, bms) end
  return less(digits(aseq), digits(bseq))
end
local since = ARGV[1]
local stop = nil
if since == '$' then
  -- The newest entry is the newest id (trimming never takes it; nothing else
  -- deletes entries): one command, and the index is not relied on for it.
  local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #newest > 0 then return {newest[1][1], '', 0, 1, newest[1][1], 0, {}} end
elseif since ~= '0-0' and #ARGV > 3 then
  -- The index first: a quiet topic costs two commands here.
  local newest = redis.call('HMGET', KEYS[2], '-first', '-last', unpack(ARGV, 4))
  local indexed, last = newest[1], newest[2]
  if indexed and last and not before(since, indexed) then
    for i = 3, #newest do
      if newest[i] and (stop == nil or before(stop, newest[i])) then stop = newest[i] end
    end
    if stop == nil or not before(since, stop) then
      -- Nothing on the topics after since: say so, if since is an id of this
      -- history (checked even when it is the index's last: the index must
      -- not answer for a history that is gone).
      if #redis.call('XRANGE', KEYS[1], since, since) > 0 then
        return {last, '', 0, 1, last, 0, {}}
      end
      stop = nil
    end
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'0-0', '', 0, 0, since, 0, {}}
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
if since == '$' then
  return {last, first, trimmed, 1, last, 0, {}}
end
local known = 0
if since ~= '0-0' then
  known = #redis.call('XRANGE', KEYS[1], since, since)
end
local wanted = {}
for i = 4, #ARGV do wanted[ARGV[i]] = true end
local limit, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
local found, position, more, count, bytes = {}, since, 0, 0, 0
-- An unknown id is a reset: nothing to read. Nothing can follow the largest
-- id (and Redis refuses '(' on it).
if (known == 1 or since == '0-0') and since ~= '"""
    + MAX_ID
    + """' and limit > 0 then
  -- Read in chunks sized by the bytes read so far, up to the entry or byte bound.
  local chunk = math.min(limit, 8)
  while true do
    local range = redis.call('XRANGE', KEYS[1], '(' .. position, '+', 'COUNT', chunk)
    local full = false
    for _, entry in ipairs(range) do
      count = count + 1
      position = entry[1]
      local fields = entry[2]
      for j = 1, #fields - 1, 2 do
        bytes = bytes + #fields[j + 1]
        if fields[j] == 't' and wanted[fields[j + 1]] then found[#found + 1] = entry end
      end
      if count >= limit or bytes >= budget then
        full = true
        break
      end
    end
    if stop and not before(position, stop) then
      -- Past the newest event on the topics: nothing more for them up to last.
      position, more = last, 0
      break
    end
    if full then
      more = 1
      break
    end
    if #range < chunk then break end
    chunk = math.min(limit - count, math.max(1, math.floor((budget - bytes) * count / bytes)))
  end
end
return {last, first, trimmed, known, position, more, found}
"""
)
READ = LuaScript(READ_SCRIPT)


def keys() -> list[str]:
    """The single node's history stream and its per-topic newest-id index (the scripts' KEYS)."""
    return [history_key(), newest_key()]


# The script's arguments that ask for the newest id only.
NOW = ("$", 0, 0)


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


async def read_batch(
    client: redis.asyncio.Redis, since: str, topics: Iterable[str], limit: int = BATCH, max_bytes: int = BATCH_BYTES
) -> Batch:
    """The retained events after ``since`` on ``topics`` among the next ``limit`` entries (``max_bytes``), or a reset.

    Continue with ``read_batch(client, batch.position, ...)`` while ``batch.more``.
    """
    wanted = list(topics)
    if not wanted:
        return Batch(last_id=since, position=since)
    raw_last, raw_first, trimmed, known, raw_position, more, entries = await READ.arun(
        client, keys(), [since, limit, max_bytes, *wanted]
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
    return decode((await READ.arun(client, keys(), NOW))[0])
