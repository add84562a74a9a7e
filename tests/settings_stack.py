"""The demo's settings with a site-wide middleware stack in front of the event endpoints.

``EVENTS["MIDDLEWARE"]`` is left at its default (``None``), so the stream and
poll endpoints go through the whole ``settings.MIDDLEWARE``: Django's
``GZipMiddleware`` and a middleware that wraps streaming bodies included.
"""

from project.settings import *  # noqa: F403
from project.settings import EVENTS, MIDDLEWARE

MIDDLEWARE = [
    "django.middleware.gzip.GZipMiddleware",
    *MIDDLEWARE,
    "tests.hooks.StreamTagMiddleware",
]
EVENTS = {**EVENTS, "MIDDLEWARE": None}
