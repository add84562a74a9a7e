"""The Redis backends: what the app asks of Redis, on a single node (or Sentinel) or on a Redis Cluster.

``active.py`` picks the backend from ``EVENTS["REDIS_URL"]`` and makes the
hub of each event loop. The pieces both backends share (URL parsing,
clients, Lua scripts, the history read, the pub/sub reader's bookkeeping)
sit beside them; ``single.py`` and ``cluster/`` hold what differs.
"""
