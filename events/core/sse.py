"""Server-Sent Events frame encoding (WHATWG HTML, "server-sent events").

Pure functions from values to the exact bytes on the wire, kept apart from
transport so they can be tested byte for byte. A frame is a block of
``field: value`` lines ending in a blank line; a line starting with ``:`` is a
comment, invisible to JavaScript (used for heartbeats and notices).

Values that would break the framing are refused, not silently mangled: an
``id`` or ``event`` with a line break (or NUL in an id) could forge fields.
Multi-line data is split into several ``data:`` lines, which the browser joins
back with ``\\n``.
"""

from __future__ import annotations

import re

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _check_single_line(field: str, value: str) -> None:
    if "\n" in value or "\r" in value:
        raise ValueError(f"SSE {field} must be a single line, got {value!r}.")
    if field == "id" and "\0" in value:
        raise ValueError(f"SSE id must not contain NUL, got {value!r}.")


def encode_event(data: str, *, id: str | None = None, event: str | None = None) -> bytes:
    """Encode one event: optional ``id:`` and ``event:`` lines, then ``data:`` lines."""
    lines = []
    if id is not None:
        _check_single_line("id", id)
        lines.append(f"id: {id}")
    if event is not None:
        _check_single_line("event", event)
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in _LINE_BREAK.split(data))
    return ("\n".join(lines) + "\n\n").encode()


def encode_comment(text: str = "") -> bytes:
    """Encode a comment block (one ``:`` line per line of text) and a blank line."""
    return "".join(f": {line}\n" if line else ":\n" for line in _LINE_BREAK.split(text)).encode() + b"\n"


def encode_retry(milliseconds: int) -> bytes:
    """Encode a ``retry:`` hint: the reconnection delay EventSource should use."""
    if isinstance(milliseconds, bool) or not isinstance(milliseconds, int) or milliseconds < 0:
        raise ValueError(f"SSE retry must be a non-negative integer of milliseconds, got {milliseconds!r}.")
    return f"retry: {milliseconds}\n\n".encode()
