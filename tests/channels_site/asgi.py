"""The documented way (docs/howto/channels.md): the events app as ``"http"`` and ``"lifespan"``."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from channels.routing import ProtocolTypeRouter, URLRouter
from django.urls import path

from events.asgi import events_asgi_app

from .consumers import EchoConsumer

# One instance for both entries: it serves HTTP and answers the lifespan scope.
events_app = events_asgi_app()

application = ProtocolTypeRouter(
    {
        "http": events_app,
        "lifespan": events_app,
        "websocket": URLRouter([path("ws/echo/", EchoConsumer.as_asgi())]),
    }
)
