"""The Redis backend: single-node or Redis Cluster, chosen by ``EVENTS["REDIS_URL"]``.

Everything the app asks of Redis goes through one of two implementations of
:class:`Backend`:

- :class:`~events.backends.single.SingleNodeBackend` for ``redis://``, ``rediss://``,
  ``unix://`` URLs: one history stream, classic pub/sub, ``<ms>-<seq>`` ids;
- :class:`~events.backends.cluster.backend.ClusterBackend` for ``redis+cluster://``
  and ``rediss+cluster://``: a history stream per slot group, sharded
  pub/sub, composite ids (``events/cluster/``).

The views, the stream, the long-poll, the hub and ``publish`` call the
backend and never look at the URL themselves.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, Iterable
from typing import Protocol

from ..conf import conf
from ..core.hub import Hub
from ..core.subscriber import Subscriber
from .cluster.backend import ClusterBackend
from .cluster.connection import is_cluster_url
from .history import Batch
from .reader import HubConnection, HubSide
from .single import SingleNodeBackend


class Backend(Protocol):
    max_id_length: int

    def is_valid_id(self, value: str) -> bool: ...

    def publish(self, topic: str, event: str, payload: str) -> str: ...

    async def apublish(self, topic: str, event: str, payload: str) -> str: ...

    def current_id(self, topics: Iterable[str] | None) -> str: ...

    async def acurrent_id(self, topics: Iterable[str] | None) -> str: ...

    async def start_position(self, topics: frozenset[str]) -> str | None: ...

    def new_subscriber(self, topics: frozenset[str], queue_size: int, *, is_stream: bool) -> Subscriber: ...

    def replay(
        self, client: Subscriber, since: str | None, live: HubConnection | None = None
    ) -> AsyncGenerator[Batch, None]:
        """What ``client`` missed after ``since``, in bounded batches; sets its position as it goes.

        ``live``, the hub's connection the client is attached through, may
        know that nothing is missed without reading (``reader.has_all_after``).
        """
        ...

    def poll_last_id(self, client: Subscriber, since: str, batch: Batch | None) -> str: ...

    def new_pubsub(self, hub: HubSide) -> HubConnection: ...

    async def ping(self) -> bool: ...


_SINGLE = SingleNodeBackend()
_CLUSTER = ClusterBackend()


# The URL the backend was last chosen for, and the backend (asked for a few times per request).
_chosen: tuple[str, Backend] = ("", _SINGLE)


def get_backend() -> Backend:
    global _chosen
    url = conf.REDIS_URL
    if _chosen[0] is not url:
        _chosen = (url, _CLUSTER if is_cluster_url(url) else _SINGLE)
    return _chosen[1]


def current_id(topics: Iterable[str] | None = None) -> str:
    """The id to resume from to get every event published from now on.

    Render it into a page and have the client resume from it: then nothing
    published between rendering and subscribing is missed. Single-node
    Redis: the newest event id (``0-0`` before the first). Redis Cluster: a
    composite id covering ``topics`` (pass the topics the page subscribes to;
    without them it covers every slot group, which is long).

    Example (read it *before* the data the page shows)::

        from events import current_id

        def board(request):
            last_event_id = current_id(["board"])
            trackers = list(Tracker.objects.all())
            return render(request, "board.html", {"trackers": trackers, "last_event_id": last_event_id})
    """
    return get_backend().current_id(topics)


async def acurrent_id(topics: Iterable[str] | None = None) -> str:
    """Async version of :func:`current_id`, for async views.

    Example::

        from events import acurrent_id

        async def board(request):
            last_event_id = await acurrent_id(["board"])
            ...
    """
    return await get_backend().acurrent_id(topics)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop (one per worker process), made on first use.

    Here rather than in ``hub.py``: the hub is given the backend's pub/sub
    connection, and the hub module stays free of the backends (which know
    the hub), so that nothing imports in a circle.
    """
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub(lambda hub: get_backend().new_pubsub(hub))
    return hub


def pop_hub() -> Hub | None:
    """Remove and return the running loop's hub (for shutdown and tests)."""
    return _hubs.pop(asyncio.get_running_loop(), None)
