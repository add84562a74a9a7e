"""The project served by Django's stock ASGI handler, as a project that skipped ``events_asgi_app()`` would be."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

application = get_asgi_application()
