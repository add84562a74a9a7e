"""Deliberately naive baseline: one Redis pub/sub connection per client.

This is what most SSE-with-Django tutorials show. It exists only as a
yardstick for bench/; do not copy it.
"""

import os

SECRET_KEY = "bench-naive-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "naive_project.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict = {}
USE_TZ = True

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
EVENTS_PREFIX = os.environ.get("EVENTS_PREFIX", "bench-naive")
EVENTS_HEARTBEAT = float(os.environ.get("EVENTS_HEARTBEAT", "15"))
EVENTS_LONGPOLL_TIMEOUT = float(os.environ.get("EVENTS_LONGPOLL_TIMEOUT", "25"))
