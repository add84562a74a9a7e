"""Who may read which topic.

``EVENTS["AUTHORIZE"]`` is a dotted path to ``(request, topic) -> bool``,
sync or async. It is called for every requested topic of every stream and
long-poll before anything is streamed (and so before any replay), outside the
stream loop, so the database connection it may use is released at once.

The default, :func:`default_authorize`, allows every topic except the private
per-user ones: a topic ``user:<id>`` only to the logged-in user whose primary
key is ``<id>``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from django.utils.module_loading import import_string

from .conf import conf

USER_TOPIC_PREFIX = "user:"


async def default_authorize(request: HttpRequest, topic: str) -> bool:
    if not topic.startswith(USER_TOPIC_PREFIX):
        return True
    auser = getattr(request, "auser", None)
    if auser is None:  # no AuthenticationMiddleware: nobody is logged in
        return False
    user = await auser()
    return bool(user.is_authenticated and topic == f"{USER_TOPIC_PREFIX}{user.pk}")


def user_topic(user: Any) -> str:
    """The private topic of ``user`` under the default hook."""
    return f"{USER_TOPIC_PREFIX}{user.pk}"


@functools.lru_cache(maxsize=8)
def _load(path: str) -> Callable[[HttpRequest, str], Any]:
    return import_string(path)  # type: ignore[no-any-return]


def get_hook() -> Callable[[HttpRequest, str], Any]:
    return _load(conf.AUTHORIZE)


async def denied_topics(request: HttpRequest, topics: Iterable[str]) -> list[str]:
    """The topics among ``topics`` that the hook refuses to ``request``."""
    hook = get_hook()
    wanted = sorted(topics)
    if inspect.iscoroutinefunction(hook):
        verdicts = [await hook(request, topic) for topic in wanted]
    else:
        # One trip to a thread for all topics (the hook may use the ORM).
        verdicts = await sync_to_async(lambda: [hook(request, topic) for topic in wanted])()
    return [topic for topic, allowed in zip(wanted, verdicts, strict=True) if allowed is not True]
