"""``manage.py bump_tracker SLUG [--by N]``: change a tracker from the shell.

Goes through the same code as the page (and so publishes after commit): open
tabs update at once, which shows that publishing works from any process.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from project.demo.board import change_tracker
from project.demo.models import Tracker


class Command(BaseCommand):
    help = "Add N (default 1) to a demo tracker; open pages update live."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="The tracker's slug, e.g. spiders.")
        parser.add_argument("--by", type=int, default=1, help="How much to add (may be negative).")

    def handle(self, *args: Any, slug: str, by: int, **options: Any) -> None:
        try:
            result = change_tracker(slug, by)
        except Tracker.DoesNotExist:
            known = ", ".join(Tracker.objects.values_list("slug", flat=True)) or "none; run seed_demo"
            raise CommandError(f"No tracker {slug!r} (known: {known}).") from None
        self.stdout.write(f"{result.tracker.name}: {result.value}")
