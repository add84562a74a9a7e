"""Prometheus metrics of the events app (exposed by ``views.metrics``).

Counters and gauges are per worker process; with several workers, set
``PROMETHEUS_MULTIPROC_DIR`` as prometheus-client documents, or scrape each
worker. Creating metric objects at import is what prometheus-client expects
and does no I/O.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

STREAMS_OPEN = Gauge("events_streams_open", "SSE streams open in this process.")
POLLS_WAITING = Gauge("events_polls_waiting", "Long-polls waiting in this process.")
TOPICS_SUBSCRIBED = Gauge("events_topics_subscribed", "Topics this process's hub is subscribed to in Redis.")
HUB_CONNECTED = Gauge("events_hub_connected", "1 while the hub's Redis pub/sub connection is up.")
EVENTS_PUBLISHED = Counter("events_published", "Events published from this process.")
EVENTS_RECEIVED = Counter("events_received", "Events the hub received from Redis (live or gap fill).")
EVENTS_DELIVERED = Counter("events_delivered", "Events handed to streams and polls (live and replayed).")
CLIENTS_COALESCED = Counter("events_clients_coalesced", "Times a slow client's queue overflowed and coalesced.")
HUB_COALESCED = Counter(
    "events_hub_coalesced", "Events the hub merged into a newer one of the same topic and name while behind."
)
CLIENTS_RESET = Counter("events_clients_reset", "Reset events sent (history expired or unknown id).")
REDIS_RECONNECTS = Counter("events_redis_reconnects", "Times the hub reconnected to Redis after losing it.")
STREAMS_REJECTED = Counter("events_streams_rejected", "Streams turned away (limit, Redis down).", ["reason"])
POLLS_REJECTED = Counter("events_polls_rejected", "Long-polls turned away (limit, Redis down).", ["reason"])
POLLS_DIRECT = Counter(
    "events_polls_direct", "Long-polls served without a Django request (anonymous, public topics, under uvicorn)."
)
STREAMS_DIRECT = Counter(
    "events_streams_direct", "Streams served without a Django request (anonymous, public topics, under uvicorn)."
)
