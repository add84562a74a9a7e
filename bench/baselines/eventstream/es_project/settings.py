"""django-eventstream (Redis mode) in a minimal project, for bench/ only."""

import os
from urllib.parse import urlparse

SECRET_KEY = "bench-eventstream-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "es_project.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict = {}
USE_TZ = True

_u = urlparse(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
# Redis mode: every process subscribes to one channel ("events_channel") and
# fans out locally; send_event() publishes there.
EVENTSTREAM_REDIS = {
    "host": _u.hostname or "127.0.0.1",
    "port": _u.port or 6379,
    "db": int((_u.path or "/0").lstrip("/") or 0),
}
