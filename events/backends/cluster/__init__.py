"""Redis Cluster mode (``redis+cluster://`` URLs): sharded pub/sub and a history per slot group.

Single-node Redis never touches this package. See ``backend.py`` for the
pieces and the README section "Redis Cluster" for the user-facing contract.
"""
