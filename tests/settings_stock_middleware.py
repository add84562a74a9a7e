"""The project's settings, with the event endpoints going through ``settings.MIDDLEWARE`` (Django's stock chain)."""

from project.settings import *  # noqa: F403
from project.settings import EVENTS

EVENTS = {**EVENTS, "MIDDLEWARE": None}
