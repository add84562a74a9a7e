"""Authorization hooks used by the tests (set with EVENTS_AUTHORIZE)."""

from django.http import HttpRequest


def deny_secret(request: HttpRequest, topic: str) -> bool:
    """Sync hook: everything but topics starting with 'secret'."""
    return not topic.startswith("secret")


async def allow_header(request: HttpRequest, topic: str) -> bool:
    """Async hook: a topic only if the request's X-Allow header names it."""
    return topic in request.headers.get("X-Allow", "").split(",")


def sync_only_middleware(get_response):
    """A plain sync middleware (not async-capable), for the checks test."""
    return get_response
