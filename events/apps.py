from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"
    verbose_name = "Live events"

    def ready(self) -> None:
        from . import checks, revocation

        checks.register()
        revocation.connect_signals()
