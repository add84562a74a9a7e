"""A small SSE reader for the tests, over a real HTTP connection (httpx).

It keeps the raw bytes, so tests can check the wire format exactly, and
parses frames the way a browser does (fields, comments, blank-line dispatch).
Every read takes a timeout: a test waits for a condition, never sleeps.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Frame:
    fields: list[tuple[str, str]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        values = [value for key, value in self.fields if key == name]
        return values[-1] if values else None

    @property
    def id(self) -> str | None:
        return self.get("id")

    @property
    def event(self) -> str | None:
        return self.get("event")

    @property
    def data(self) -> str | None:
        lines = [value for key, value in self.fields if key == "data"]
        return "\n".join(lines) if lines else None

    @property
    def json(self) -> Any:
        assert self.data is not None, f"frame has no data: {self}"
        return json.loads(self.data)

    @property
    def is_event(self) -> bool:
        return self.data is not None


class SSEStream:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.raw = bytearray()
        self._chunks = response.aiter_raw()
        self._buffer = b""
        self.ended = False

    async def _read_line(self) -> bytes | None:
        while b"\n" not in self._buffer:
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self.ended = True
                return None
            self.raw += chunk
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    async def _next_frame(self) -> Frame | None:
        frame = Frame()
        while True:
            line = await self._read_line()
            if line is None:
                return None
            text = line.decode()
            if text == "":
                if frame.fields or frame.comments:
                    return frame
                continue
            if text.startswith(":"):
                frame.comments.append(text[1:].strip())
                continue
            name, _, value = text.partition(":")
            frame.fields.append((name, value[1:] if value.startswith(" ") else value))

    async def next_frame(self, timeout: float = 5.0) -> Frame | None:
        """The next frame (event or comment block); None at the end of the body."""
        return await asyncio.wait_for(self._next_frame(), timeout)

    async def next_event(self, timeout: float = 5.0) -> Frame:
        """The next frame that a browser would dispatch (has data), skipping comments."""

        async def read() -> Frame:
            while True:
                frame = await self._next_frame()
                if frame is None:
                    raise AssertionError(f"stream ended while waiting for an event; got {bytes(self.raw)!r}")
                if frame.is_event:
                    return frame

        return await asyncio.wait_for(read(), timeout)

    async def events(self, count: int, timeout: float = 5.0) -> list[Frame]:
        return [await self.next_event(timeout) for _ in range(count)]

    async def until_end(self, timeout: float = 5.0) -> list[Frame]:
        """Read until the server ends the body; return the frames seen."""

        async def read() -> list[Frame]:
            frames = []
            while (frame := await self._next_frame()) is not None:
                frames.append(frame)
            return frames

        return await asyncio.wait_for(read(), timeout)


@asynccontextmanager
async def open_stream(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[SSEStream]:
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        yield SSEStream(response)


class RawStream:
    """An SSE request on a bare socket: cheap enough to open hundreds, and able to not read at all."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.data = b""

    async def read_until(self, marker: bytes, timeout: float = 5.0) -> bytes:
        async def read() -> bytes:
            while marker not in self.data:
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise AssertionError(f"connection closed before {marker!r}; got {self.data[-500:]!r}")
                self.data += chunk
            return self.data

        return await asyncio.wait_for(read(), timeout)

    async def read_to_end(self, timeout: float = 5.0) -> bytes:
        """Read until the chunked body's last chunk (a clean end) or EOF."""
        await self.read_until(b"\r\n0\r\n\r\n", timeout)
        return self.data

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def open_raw_stream(url: str, headers: dict[str, str] | None = None, buffer: int | None = None) -> RawStream:
    """Send ``GET url`` on a new connection; ``buffer`` shrinks the receive buffer (for stuck clients)."""
    parsed = httpx.URL(url)
    sock = None
    if buffer is not None:
        import socket

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (parsed.host, parsed.port))
        reader, writer = await asyncio.open_connection(sock=sock)
    else:
        reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
    lines = [
        f"GET {parsed.raw_path.decode()} HTTP/1.1",
        f"Host: {parsed.host}:{parsed.port}",
        "Accept: text/event-stream",
    ]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    return RawStream(reader, writer)


async def open_attached_stream(url: str, timeout: float = 5.0) -> RawStream:
    """Open a stream and wait until the hub has attached it (its ``event: open``).

    ``: stream open`` comes before the stream subscribes: a worker stopped
    in between refuses the stream ("unavailable: the server is shutting
    down") rather than ending it with its closing comment.
    """
    separator = "&" if "?" in url else "?"
    stream = await open_raw_stream(f"{url}{separator}open_event=1")
    try:
        await stream.read_until(b"event: open", timeout)
    except BaseException:
        await stream.close()
        raise
    return stream


async def stop_and_read_to_end(
    stop: Callable[[], None], process: subprocess.Popen[bytes], streams: Sequence[RawStream], timeout: float
) -> tuple[list[bytes], float]:
    """``stop()`` the server, read every stream to its end, wait for ``process`` to exit.

    Returns the bodies and the seconds all that took; each step fails after ``timeout`` seconds.
    """
    started = time.monotonic()
    stop()
    bodies = await asyncio.gather(*(stream.read_to_end(timeout=timeout) for stream in streams))
    await asyncio.to_thread(process.wait, timeout)
    return list(bodies), time.monotonic() - started
