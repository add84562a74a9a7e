"""The project's ASGI application wrapped by an ASGI middleware that wraps ``send`` (as Sentry's does).

The middleware checks that its ``send`` is only ever called in the
request's own context (its task, or a child task of it): the events app must not
write to a wrapped ``send`` from the hub's task (direct writes are for
uvicorn's own ``send`` only). A breach is logged as an error.
"""

from __future__ import annotations

import contextvars
import logging
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from events.asgi import events_asgi_app
from events.serving.asgi_types import ASGIApp, ASGIMessage, Receive, Scope, Send

logger = logging.getLogger("tests.wrapped_asgi")
request_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("request_id", default=None)


class SendWrappingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.requests += 1
        mine = self.requests
        request_id.set(mine)

        async def wrapped_send(message: ASGIMessage) -> None:
            # Django's own handler sends from a child task of the request's,
            # which copies its context: the context is what must match.
            if request_id.get() != mine:
                logger.error("send of request %d called from another task's context", mine)
            await send(message)

        await self.app(scope, receive, wrapped_send)


application = SendWrappingMiddleware(events_asgi_app())
