"""``manage.py seed_demo [--reset]``: create the demo's default trackers (idempotent)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from project.demo.board import seed


class Command(BaseCommand):
    help = "Create the demo board's default trackers if they are missing (--reset: set every tracker to 0)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reset", action="store_true", help="Set every tracker to 0 and clear the change log.")

    def handle(self, *args: Any, reset: bool, **options: Any) -> None:
        created = seed(reset=reset)
        if options["verbosity"] > 0:
            self.stdout.write(f"{created} tracker(s) created" + (", all reset to 0" if reset else ""))
