"""URLs of the events app; include with ``path("events/", include("events.urls"))``."""

from django.urls import path

from .http import views

app_name = "events"

urlpatterns = [
    path("stream/", views.stream, name="stream"),
    path("poll/", views.poll, name="poll"),
    path("health/", views.health, name="health"),
    path("metrics/", views.metrics, name="metrics"),
]
