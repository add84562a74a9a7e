"""The demo's settings with a Channels application (ASGI_APPLICATION, as Channels documents it)."""

from project.settings import *  # noqa: F403

ASGI_APPLICATION = "tests.channels_site.asgi.application"
