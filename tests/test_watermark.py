"""The hub reader's watermark: duplicates, and ids Redis cannot have made.

Pure logic; the same cases against a real Redis are in test_hostile.py.
"""

from __future__ import annotations

from events.backends.watermark import MARGIN_MS, Watermark


def test_only_what_redis_said_was_read_makes_duplicates() -> None:
    mark = Watermark()
    assert not mark.is_duplicate((1, 0))
    mark.cover((5, 0))
    assert mark.is_duplicate((5, 0)) and not mark.is_duplicate((5, 1))
    # A live message moves where the next gap fill starts, not the duplicates.
    mark.handed((9, 0))
    assert mark.newest == (9, 0) and not mark.is_duplicate((6, 0))
    # After a reset the count starts again, maybe lower (a new history).
    mark.restart((2, 0))
    assert (mark.covered, mark.newest) == ((2, 0), (2, 0))


def test_ids_ahead_of_redis_s_clock_are_implausible() -> None:
    mark = Watermark()
    assert mark.plausible((10**15, 0), now=0.0)  # nothing measured yet: no bound
    mark.measure(redis_ms=1_000_000, newest_id=(999_000, 0), at=100.0)
    assert mark.plausible((1_000_000 + MARGIN_MS, 0), now=100.0)
    assert not mark.plausible((1_000_000 + MARGIN_MS + 1, 0), now=100.0)
    # Time goes on for Redis too.
    assert mark.plausible((1_000_000 + MARGIN_MS + 2000, 0), now=102.0)
    # A newest id ahead of the clock (the clock went back) is the bound.
    mark.measure(redis_ms=1_000_000, newest_id=(1_500_000, 3), at=100.0)
    assert mark.plausible((1_500_000, 9), now=100.0)
