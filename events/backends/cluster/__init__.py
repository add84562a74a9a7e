"""Redis Cluster mode (``redis+cluster://`` URLs): sharded pub/sub and a history per slot group.

Single-node Redis never touches this package. See ``backend.py`` for the
pieces and docs/howto/redis.md ("Redis Cluster") and docs/reference/wire.md
(composite ids) for the user-facing contract.
"""
