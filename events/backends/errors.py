"""What a Redis failure looks like, from either client library: the one tuple every caller catches.

``redis.RedisError`` is not enough: redis-py's cluster client raises
``RedisClusterException`` (not a ``RedisError``) when no node answers or the
cluster is not discovered yet, and socket and timeout errors can escape both
clients. Every place that turns a Redis failure into one of the app's
documented answers (``PublishError``; health 503 with ``hub`` not
``connected``; the long-poll's 503 with ``Retry-After``; the stream's
retry-able 200; the tag's ``null`` id) catches :data:`REDIS_ERRORS`, so
both backends fail the same way.
"""

from __future__ import annotations

import redis
from redis.exceptions import RedisClusterException

REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisClusterException, OSError, TimeoutError)
