"""ASGI entry point: ``uvicorn project.asgi:application --lifespan on``.

Django plus the events app's lifespan handling (see events/asgi.py).
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from events.asgi import events_asgi_app

application = events_asgi_app()
