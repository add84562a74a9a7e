"""Who may read which topic.

``EVENTS["AUTHORIZE"]`` is a dotted path to ``(request, topic) -> bool``,
sync or async. It is called for every requested topic of every stream and
long-poll before anything is streamed (and so before any replay), outside the
stream loop, so the database connection it may use is released at once.

The default, :func:`default_authorize`, allows every topic except the private
per-user ones: a topic ``user:<id>`` only to the logged-in user whose primary
key is ``<id>``. Where its answer needs no request (an anonymous visitor's
public topics), the events handler may serve the request without building
one, and so without calling it (``serving/public.py``); a hook of the site's
own is always called.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from asgiref.sync import iscoroutinefunction, sync_to_async
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
def _load(path: str) -> tuple[Callable[[HttpRequest, str], Any], bool]:
    """The hook at ``path`` and whether it is async (asked once, not per request)."""
    hook = import_string(path)
    return hook, is_async(hook)


def get_hook() -> Callable[[HttpRequest, str], Any]:
    return _load(conf.AUTHORIZE)[0]


def is_async(hook: Callable[..., Any]) -> bool:
    """Whether calling ``hook`` returns an awaitable, as far as can be told without calling it.

    Sees through ``functools.partial``, asgiref's ``markcoroutinefunction``
    (which ``inspect`` misses before Python 3.12) and objects whose
    ``__call__`` is ``async def``.
    """
    while isinstance(hook, functools.partial):
        hook = hook.func
    if iscoroutinefunction(hook):
        return True
    if inspect.isroutine(hook):
        return False
    # An instance whose class defines ``async def __call__``.
    return iscoroutinefunction(type(hook).__call__)


async def denied_topics(request: HttpRequest, topics: Iterable[str]) -> list[str]:
    """The topics among ``topics`` that the hook refuses to ``request``."""
    hook, asynchronous = _load(conf.AUTHORIZE)
    wanted = sorted(topics)
    if asynchronous:
        verdicts = [await hook(request, topic) for topic in wanted]
    else:
        # One trip to a thread for all topics (the hook may use the ORM).
        verdicts = await sync_to_async(lambda: [hook(request, topic) for topic in wanted])()
        # A sync-looking callable may still return awaitables (a hook
        # ``is_async`` cannot see through): await them here rather than refuse.
        verdicts = [await verdict if inspect.isawaitable(verdict) else verdict for verdict in verdicts]
    return [topic for topic, allowed in zip(wanted, verdicts, strict=True) if allowed is not True]
