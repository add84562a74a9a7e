"""Streaming responses that the events handler may send itself, unless a middleware replaced their body.

The stream (``streaming.py``) and a waiting long-poll (``polling.py``) are
streaming responses, so that Django and any middleware treat their bodies as
what they are: not known when the view returns. Served by ``handlers.py``
(the ``events_asgi_app``), the handler sends them without Django's
``send_response``: it lets go of the request, the middleware chain and the
response object itself while the client waits, and keeps only what sending
needs (:meth:`DirectResponse.start_message` and the body's source).

A middleware that replaces ``streaming_content`` (to wrap, count or rewrite
the body: Django's ``GZipMiddleware`` does) is honoured: such a response is
sent by Django's ``send_response``, through the replacement.
"""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse

# Django's property, which the class below extends with a setter hook.
_STREAMING_CONTENT: Any = vars(StreamingHttpResponse)["streaming_content"]


class DirectResponse(StreamingHttpResponse):
    """A streaming response that notes whether a middleware replaced its body."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set by the setter below when a middleware replaces the body (the
        # setter also runs in __init__, hence the reset here).
        self.content_replaced = False

    @property
    def streaming_content(self) -> Any:
        return _STREAMING_CONTENT.fget(self)

    @streaming_content.setter
    def streaming_content(self, value: Any) -> None:
        self.content_replaced = True
        _STREAMING_CONTENT.fset(self, value)

    @property
    def can_send_directly(self) -> bool:
        return not self.content_replaced

    def start_message(self) -> dict[str, Any]:
        """The ``http.response.start`` message for this response's status, headers and cookies."""
        headers = [(name.encode("ascii"), value.encode("latin1")) for name, value in self.items()]
        headers += [(b"Set-Cookie", c.output(header="").encode("ascii").strip()) for c in self.cookies.values()]
        return {"type": "http.response.start", "status": self.status_code, "headers": headers}
