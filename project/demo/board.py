"""The board's domain logic: default trackers, changing one, and the JSON the page fetches.

Every change publishes invalidations *after the transaction commits*
(``publish_on_commit``): on the public topic ``board`` for everybody, and on
the private topic of the signed-in user who made it. Pages react by
re-fetching the JSON views (invalidate, then fetch), so the event payload is
only a hint and never the data itself.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from events import publish_on_commit
from events.authorization import user_topic

from .models import Change, Tracker

BOARD_TOPIC = "board"
RECENT = 8

DEFAULT_TRACKERS = [
    ("spiders", "Spiders"),
    ("deadlines", "Deadlines"),
    ("production-outages", "Production outages"),
    ("public-speaking", "Public speaking"),
]

AnyUser = AbstractBaseUser | AnonymousUser


def seed(reset: bool = False) -> int:
    """Create the default trackers that are missing (set all to 0 with ``reset``); return how many were created."""
    created = 0
    for position, (slug, name) in enumerate(DEFAULT_TRACKERS):
        _, was_created = Tracker.objects.get_or_create(slug=slug, defaults={"name": name, "position": position})
        created += was_created
    if reset:
        with transaction.atomic():
            Tracker.objects.update(value=0, updated_at=timezone.now())
            Change.objects.all().delete()
            publish_on_commit(BOARD_TOPIC, {"reset": True})
    return created


def change_tracker(slug: str, delta: int, user: AnyUser | None = None) -> Change:
    """Add ``delta`` to a tracker, log it, and publish the invalidations on commit.

    Raises ``Tracker.DoesNotExist`` for an unknown slug.
    """
    # The demo's users are django.contrib.auth Users (Change.user points there).
    author = user if isinstance(user, User) and user.is_authenticated else None
    with transaction.atomic():
        # The UPDATE comes first, so SQLite takes its write lock at once (no
        # read-then-write upgrade, which could fail with "database is locked").
        if not Tracker.objects.filter(slug=slug).update(value=F("value") + delta, updated_at=timezone.now()):
            raise Tracker.DoesNotExist(f"No tracker {slug!r}.")
        tracker = Tracker.objects.get(slug=slug)
        change = Change.objects.create(tracker=tracker, user=author, delta=delta, value=tracker.value)
        publish_on_commit(BOARD_TOPIC, {"tracker": slug})
        if author is not None:
            publish_on_commit(user_topic(author), {"change": change.pk})
    return change


def _who(change: Change) -> str:
    if change.user is None:
        return "a visitor"
    return change.user.first_name or change.user.get_username()


def _change_json(change: Change) -> dict[str, Any]:
    return {
        "id": change.pk,
        "tracker": change.tracker.name,
        "slug": change.tracker.slug,
        "delta": change.delta,
        "value": change.value,
        "who": _who(change),
        "at": change.created_at.isoformat(),
    }


def board_state() -> dict[str, Any]:
    """Everything the board shows: the trackers and the latest changes."""
    trackers = [
        {"slug": t.slug, "name": t.name, "value": t.value, "updated_at": t.updated_at.isoformat()}
        for t in Tracker.objects.all()
    ]
    recent = Change.objects.select_related("tracker", "user")[:RECENT]
    return {"trackers": trackers, "recent": [_change_json(change) for change in recent]}


def private_state(user: AnyUser) -> dict[str, Any]:
    """What only ``user`` sees: their own changes (nothing for anonymous visitors)."""
    if not isinstance(user, User) or not user.is_authenticated:
        return {"user": None, "topic": None, "count": 0, "recent": []}
    mine = Change.objects.filter(user=user).select_related("tracker", "user")
    return {
        "user": getattr(user, "first_name", "") or user.get_username(),
        "topic": user_topic(user),
        "count": mine.count(),
        "recent": [_change_json(change) for change in mine[:RECENT]],
    }
