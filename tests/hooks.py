"""Authorization hooks used by the tests (set with EVENTS_AUTHORIZE)."""

import functools
from collections.abc import AsyncIterator, Awaitable, Callable

from asgiref.sync import markcoroutinefunction
from django.http import HttpRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase


def deny_secret(request: HttpRequest, topic: str) -> bool:
    """Sync hook: everything but topics starting with 'secret'."""
    return not topic.startswith("secret")


async def allow_header(request: HttpRequest, topic: str) -> bool:
    """Async hook: a topic only if the request's X-Allow header names it."""
    return topic in request.headers.get("X-Allow", "").split(",")


class AsyncCallable:
    """Async hook as an object whose ``__call__`` is ``async def``: everything but 'secret*'."""

    async def __call__(self, request: HttpRequest, topic: str) -> bool:
        return not topic.startswith("secret")


async def _deny_prefix(request: HttpRequest, topic: str, prefix: str) -> bool:
    return not topic.startswith(prefix)


def _coroutine_returning(request: HttpRequest, topic: str) -> Awaitable[bool]:
    return _deny_prefix(request, topic, "secret")


async_callable_object = AsyncCallable()
# A functools.partial of an async function.
partial_of_async = functools.partial(_deny_prefix, prefix="secret")
# A sync function marked as a coroutine function (as decorators built with
# asgiref do): inspect.iscoroutinefunction() misses it before Python 3.12.
marked_coroutine_function = markcoroutinefunction(_coroutine_returning)
# Not marked at all, but returns an awaitable all the same.
returns_awaitable = _coroutine_returning


def sync_only_middleware(
    get_response: Callable[[HttpRequest], HttpResponseBase],
) -> Callable[[HttpRequest], HttpResponseBase]:
    """A plain sync middleware (not async-capable), for the checks test."""
    return get_response


class StreamTagMiddleware:
    """Wraps every streamed event-stream chunk, as a user middleware may (counting, rewriting).

    It appends an SSE comment to each chunk, so a test can see that the body
    really went through the replaced ``streaming_content``.
    """

    async_capable = True
    sync_capable = False
    TAG = b": tagged\n\n"

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]]) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = await self.get_response(request)
        if isinstance(response, StreamingHttpResponse) and response["Content-Type"] == "text/event-stream":
            original = response.streaming_content

            async def tagged() -> AsyncIterator[bytes]:
                async for chunk in original:  # type: ignore[union-attr]
                    yield bytes(chunk) + self.TAG

            response.streaming_content = tagged()
        return response


def broken(request: HttpRequest, topic: str) -> bool:
    """A hook with a bug: every request it sees is a 500."""
    raise RuntimeError("bug in the authorization hook")
