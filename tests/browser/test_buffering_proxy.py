"""Behind a proxy that holds event-stream bodies back, a page still gets every event, once, in order.

Antivirus filters and some corporate proxies pass a response's head at once
and hold its body until many kilobytes have arrived, whatever
``X-Accel-Buffering`` says: the stream "opens" and stays mute. The proxy
here (asyncio, in a thread) does exactly that to ``text/event-stream``
bodies (64 KB), in front of the deployed site (nginx, uvicorn). client.js
must notice that the stream's ``open`` event never comes, long-poll from the
same id, retry the stream later, and say so (``state``, ``onMute``, the
demo's badge).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect

from events import publish
from tests.servers import free_port

from .nginx import PREFIX, Nginx

# The proxy holds an event-stream body until this many bytes have arrived.
HOLD_BYTES = 64 * 1024


class BufferingProxy:
    """One request per connection: forwards it upstream, holds back event-stream bodies."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.held_streams = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BufferingProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("the buffering proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            # Every connection still open (streams, polls) is cut, and its sockets closed.
            for task in self._connections:
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            head = await client_reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin1").split("\r\n")
            # One request per connection: no keep-alive to follow.
            kept = [line for line in lines[1:] if line and not line.lower().startswith(("connection:", "keep-alive:"))]
            request = "\r\n".join([lines[0], *kept, "Connection: close", "", ""]).encode("latin1")
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            upstream_writer.write(request)
            await upstream_writer.drain()
            response_head = await upstream_reader.readuntil(b"\r\n\r\n")
            client_writer.write(response_head)  # the head passes at once
            await client_writer.drain()
            holds = b"text/event-stream" in response_head.lower()
            if holds:
                self.held_streams += 1
            held = b""
            while True:
                chunk = await upstream_reader.read(65536)
                if not chunk:
                    break
                if not holds:
                    client_writer.write(chunk)
                    await client_writer.drain()
                    continue
                held += chunk
                if len(held) >= HOLD_BYTES:
                    client_writer.write(held)
                    await client_writer.drain()
                    held = b""
            if held:
                client_writer.write(held)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(task)
            for writer in (upstream_writer, client_writer):
                if writer is not None:
                    writer.close()
                    try:
                        await writer.wait_closed()
                    except (OSError, asyncio.CancelledError):
                        pass


@pytest.fixture
def proxy(nginx: Nginx) -> Iterator[BufferingProxy]:
    with BufferingProxy(nginx.port) as proxy:
        yield proxy


SUBSCRIBE = """([topic, since]) => {
  const config = LiveEvents.config();
  const probe = { events: [], mutes: [], states: [] };
  window.probe = probe;
  probe.sub = LiveEvents.subscribe(config.streamUrl, [topic], (e) => probe.events.push(e.data), {
    share: false,
    pollUrl: config.pollUrl,
    lastEventId: since,
    openTimeout: 1500,
    muteRetryAfter: 1500,
    onMute: (info) => probe.mutes.push(info),
    onStateChange: (state) => probe.states.push(state),
  });
}"""


def test_a_mute_stream_falls_back_to_long_poll_and_misses_nothing(
    new_context: Callable[..., object], proxy: BufferingProxy, topic: str
) -> None:
    context = new_context()
    page: Page = context.new_page()  # type: ignore[attr-defined]
    page.goto(f"http://127.0.0.1:{proxy.port}{PREFIX}/")
    # The demo's own subscription: the badge says what is true, never "live".
    badge = page.locator("#connection")
    expect(badge).to_have_attribute("data-state", "polling")
    assert "live" not in page.evaluate("window.demo.subscription.state")

    since = publish(topic, data="before")
    page.evaluate(SUBSCRIBE, [topic, since])
    # Published while the new stream is mute: the long-poll must bring them.
    for number in range(5):
        publish(topic, data=number)
    page.wait_for_function("probe.mutes.length >= 1 && probe.sub.state === 'polling'")
    for number in range(5, 10):
        publish(topic, data=number)
    page.wait_for_function("probe.events.length >= 10")
    # The stream is tried again (and is mute again): still nothing missed or repeated.
    page.wait_for_function("probe.mutes.length >= 2")
    for number in range(10, 15):
        publish(topic, data=number)
    page.wait_for_function("probe.events.length >= 15")
    assert page.evaluate("probe.events") == list(range(15))
    assert "live" not in page.evaluate("probe.states")
    assert page.evaluate("probe.mutes[1].retryIn") > 0
    assert proxy.held_streams >= 3


def test_without_a_buffering_proxy_the_stream_is_live_after_its_open_event(
    open_board: Callable[..., Page], topic: str
) -> None:
    page = open_board()
    since = publish(topic, data="before")
    page.evaluate(SUBSCRIBE, [topic, since])
    page.wait_for_function("probe.sub.state === 'live'")
    publish(topic, data=1)
    page.wait_for_function("probe.events.length === 1")
    assert page.evaluate("probe.mutes") == []
    assert page.evaluate("probe.sub.transport") == "stream"
