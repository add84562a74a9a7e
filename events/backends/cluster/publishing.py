"""Publishing in cluster mode: ``XADD`` to the group's stream and ``SPUBLISH`` to the topic's shard channel.

The same one-round-trip, atomic Lua script as single-node, with ``SPUBLISH``:
the stream and the channel share the group's hash tag, so the script runs on
the one node that owns both, and the message goes only to that shard.
"""

from __future__ import annotations

from typing import Any

from ...conf import conf
from ..history import INDEX_SCRIPT, index_topics
from ..scripts import LuaScript
from .connection import get_sync_cluster, run_command
from .layout import channel_name, group_of, history_key, newest_key

# KEYS[1]: the group's history stream, KEYS[2]: its newest-id index. ARGV:
# max length, topic, event, JSON data, shard channel, most topics in the index.
PUBLISH_SCRIPT = (
    """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 't', ARGV[2], 'e', ARGV[3], 'd', ARGV[4])
redis.call('SPUBLISH', ARGV[5], id .. '\\n' .. ARGV[3] .. '\\n' .. ARGV[4])
"""
    + INDEX_SCRIPT
    + """
return id
"""
)
_PUBLISH = LuaScript(PUBLISH_SCRIPT)


def _script_args(topic: str, event: str, payload: str) -> tuple[list[str], list[Any]]:
    group = group_of(topic)
    args = [conf.HISTORY, topic, event, payload, channel_name(topic), index_topics(conf.HISTORY)]
    return [history_key(group), newest_key(group)], args


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def publish(topic: str, event: str, payload: str) -> str:
    keys, args = _script_args(topic, event, payload)
    return _text(_PUBLISH.run(get_sync_cluster(), keys, args))


async def apublish(topic: str, event: str, payload: str) -> str:
    keys, args = _script_args(topic, event, payload)
    return _text(await run_command(lambda client: _PUBLISH.arun(client, keys, args)))
