from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"
    verbose_name = "Live events"

    def ready(self) -> None:
        from . import checks

        checks.register()
