"""``manage.py publish_event TOPIC [--event NAME] [--data JSON]``: publish and print the id."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.exceptions import PublishError
from events.publishing import DEFAULT_EVENT, publish


class Command(BaseCommand):
    help = "Publish an event on a topic and print its id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("topic", help="Topic to publish on, e.g. status.")
        parser.add_argument("--event", default=DEFAULT_EVENT, help=f"Event name (default: {DEFAULT_EVENT}).")
        parser.add_argument("--data", default=None, help="JSON payload, e.g. '{\"id\": 3}' (default: null).")

    def handle(self, *args: Any, **options: Any) -> None:
        data = None
        if options["data"] is not None:
            try:
                data = json.loads(options["data"])
            except json.JSONDecodeError as exc:
                raise CommandError(f"--data is not valid JSON ({exc}): {options['data']!r}") from None
        try:
            event_id = publish(options["topic"], data=data, event=options["event"])
        except (ValueError, TypeError, PublishError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(event_id)
