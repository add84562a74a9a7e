"""The hub reader's knowledge of event ids: which are duplicates, where a gap fill starts, which are foreign.

Owned by the Redis side (``reader.py``); pure bookkeeping, no I/O.

- ``covered``: every event up to this id has been handed to the hub, or the
  history was read up to it. Only ids Redis itself gave us move it: the
  newest id read while the PONG that follows proves we have read up to there,
  and the end of a gap fill. A message at or below it is a duplicate (the
  overlap of a gap fill with the live messages that arrived meanwhile).
- ``newest``: the newest id handed to the hub; a reconnect fills the gap
  after it.
- the *horizon*: the largest id Redis could have produced by now, from
  Redis's own clock and newest id at the last check, plus the time elapsed
  since on our monotonic clock. Redis makes an id from its clock when the
  event is added (or from the previous id when its clock went back), so a
  live message beyond the horizon was not made by it: someone with PUBLISH
  rights sent it. Such a message must not reach clients, or its id would
  make them (and, through ``newest``, the next gap fill) skip the real
  events that follow as already seen. The reader checks a message beyond the
  horizon against Redis before skipping it, so a Redis clock that jumped
  ahead costs a round trip, never an event.

Live messages do not move ``covered``: Redis delivers them once and in
order, so nothing needs dropping against them, and a foreign id within the
horizon's margin can then mislead nobody but the clients of the topic it was
sent on, by at most :data:`MARGIN_MS`; at the next reconnect the gap fill
finds it unknown, and every client gets a ``reset`` (as after a Redis that
lost data): a re-fetch, never a silent gap.
"""

from __future__ import annotations

from ..core.ids import EventKey

# Milliseconds beyond Redis's clock (as estimated) still taken as plausible:
# absorbs the drift between our monotonic clock and Redis's wall clock
# between two checks (a few per minute while idle, or on each doubtful id).
MARGIN_MS = 1000


class Watermark:
    __slots__ = ("_horizon_ms", "_measured_at", "blind", "covered", "newest")

    def __init__(self) -> None:
        self.covered: EventKey | None = None
        self.newest: EventKey | None = None
        # Redis's clock (or its newest id's, if later) in ms at ``_measured_at``
        # (our monotonic clock, seconds); no bound before the first check.
        self._horizon_ms: int | None = None
        self._measured_at = 0.0
        # Lost while live before any id was known (a cluster group whose node
        # failed at once): its clients get a reset when it is back.
        self.blind = False

    def is_duplicate(self, key: EventKey) -> bool:
        return self.covered is not None and key <= self.covered

    def handed(self, key: EventKey) -> None:
        """``key`` was handed to the hub."""
        if self.newest is None or key > self.newest:
            self.newest = key

    def cover(self, key: EventKey) -> None:
        """Everything up to ``key`` has been handed over (read from Redis, not from a message)."""
        if self.covered is None or key > self.covered:
            self.covered = key
        self.handed(key)

    def restart(self, key: EventKey) -> None:
        """After a reset: count from ``key`` again (a new history may start below the old ids)."""
        self.covered = self.newest = key

    def measure(self, redis_ms: int, newest_id: EventKey, at: float) -> None:
        """Redis said its clock read ``redis_ms`` and its newest id was ``newest_id``, at ``at`` (our clock).

        ``at`` is when the question was sent, so the estimate errs ahead, never behind.
        """
        self._horizon_ms = max(redis_ms, newest_id[0])
        self._measured_at = at

    def plausible(self, key: EventKey, now: float) -> bool:
        """Whether Redis could have produced ``key`` by ``now`` (our monotonic clock, seconds)."""
        if self._horizon_ms is None:
            return True
        return key[0] <= self._horizon_ms + int((now - self._measured_at) * 1000) + MARGIN_MS
