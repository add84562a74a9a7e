"""Lua scripts run on Redis by their SHA1 (``EVALSHA``), hashed once.

redis-py's ``register_script`` makes a new script object, and hashes the
source again, on every call; a :class:`LuaScript` is made once per module
and given the client per call. When Redis does not know the script yet (first
use, or after a restart or ``SCRIPT FLUSH``), ``EVAL`` sends it once, which
also caches it in Redis for the next ``EVALSHA``. With Redis Cluster the
client sends both to the node owning the script's key (every script here
touches keys of one slot), and each node caches the script on first use.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.exceptions import NoScriptError


class LuaScript:
    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def run(self, client: redis.Redis | redis.cluster.RedisCluster, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)

    async def arun(
        self, client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """Async version of :meth:`run`."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)
