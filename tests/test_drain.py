"""A deploy without a reconnect storm: a stopping worker ends its streams at ``DRAIN_RATE``.

Two uvicorn workers behind nginx (an upstream of both), ``CLIENTS`` raw SSE
clients in one asyncio loop, a publisher sending numbered events at
``PUBLISH_RATE`` per second. One worker is stopped (SIGTERM) and started
again meanwhile. Every client reconnects at once when its stream ends, with
``Last-Event-ID``: it must end with every event exactly once, in order, and
the reconnects (which all go to the other worker, nginx's upstream while the
first one is down) must arrive at no more than about ``DRAIN_RATE`` per
second. The peak rate is measured from the clients' own reconnect times and
printed (run with ``-s`` to see it).

``CLIENTS`` defaults to 2,000 (``EVENTS_TEST_DRAIN_CLIENTS`` to change it):
on a small shared machine fewer may be needed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from events import publish

from .browser.nginx import find_nginx
from .servers import UvicornServer, free_port, start_uvicorn, terminate, wait_for

CLIENTS = int(os.environ.get("EVENTS_TEST_DRAIN_CLIENTS", "2000"))
DRAIN_RATE = 500
PUBLISH_RATE = 20

NGINX_CONF = """\
{user}
worker_processes 1;
worker_rlimit_nofile 16384;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    upstream workers {{
        server 127.0.0.1:{one};
        server 127.0.0.1:{two};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://workers;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_read_timeout 30s;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""


@contextmanager
def nginx_in_front_of(one: int, two: int) -> Iterator[int]:
    directory = Path(tempfile.mkdtemp(prefix="nginx-drain-"))
    port = free_port()
    user = "user root;" if os.geteuid() == 0 else ""
    (directory / "nginx.conf").write_text(NGINX_CONF.format(user=user, dir=directory, one=one, two=two, port=port))
    command = [find_nginx(), "-p", str(directory), "-c", str(directory / "nginx.conf"), "-g", "daemon off;"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _listening(port, process), 15, "nginx to listen")
        yield port
    finally:
        terminate(process, 10)
        shutil.rmtree(directory, ignore_errors=True)


def _listening(port: int, process: subprocess.Popen[bytes]) -> bool:
    import socket

    if process.poll() is not None:
        raise AssertionError(f"nginx exited with {process.returncode}")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Client:
    """One raw SSE client that reconnects at once, with Last-Event-ID, whenever its stream ends."""

    def __init__(self, port: int, topic: str, last_id: str) -> None:
        self.port = port
        self.topic = topic
        self.last_id = last_id
        self.numbers: list[int] = []
        self.reconnects: list[float] = []
        self.done = False
        self.state = "new"  # for the failure message: where a client that did not come back is

    async def run(self) -> None:
        first = True
        while not self.done:
            if not first:
                self.reconnects.append(time.monotonic())
            first = False
            try:
                self.state = "connecting"
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.state = "connect-failed"
                await asyncio.sleep(0.05)
                continue
            try:
                request = (
                    # HTTP/1.0: no chunked encoding, the body is the stream itself.
                    f"GET /events/stream/?topic={self.topic} HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                    f"Last-Event-ID: {self.last_id}\r\n\r\n"
                )
                writer.write(request.encode())
                buffer = b""
                self.state = "waiting"
                while not self.done:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    buffer += chunk
                    self.state = "streaming" if b"stream open" in buffer or self.state == "streaming" else self.state
                    *frames, buffer = buffer.split(b"\n\n")
                    for frame in frames:
                        self._frame(frame)
            except OSError:
                pass
            finally:
                writer.close()

    def _frame(self, frame: bytes) -> None:
        # The first frame starts with the response head: find the fields.
        at = frame.find(b"id: ")
        if at < 0 or b"event: n" not in frame:
            return
        event_id = frame[at + 4 : frame.index(b"\n", at)].decode()
        number = int(frame[frame.rindex(b'"data": ') + 8 : frame.rindex(b"}")])
        self.last_id = event_id
        self.numbers.append(number)


def peak_rate(times: list[float], window: float = 1.0) -> float:
    """The most events within any ``window`` seconds, per second."""
    times = sorted(times)
    best, start = 0, 0
    for end in range(len(times)):
        while times[end] - times[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best / window


def streams(server: UvicornServer) -> int:
    """Open streams of ``server``; -1 while it is too busy to answer (the callers wait with a deadline)."""
    try:
        return int(httpx.get(f"{server.url}/events/health/", timeout=10).json()["streams"])
    except httpx.HTTPError:
        return -1


@pytest.mark.timeout(300)
async def test_a_restarted_worker_drains_its_streams_without_a_reconnect_storm(
    redis_url: str, events_prefix: str, topic: str
) -> None:
    env = {
        "REDIS_URL": redis_url,
        "EVENTS_PREFIX": events_prefix,
        "EVENTS_HEARTBEAT": "1",
        "EVENTS_DRAIN_RATE": str(DRAIN_RATE),
        "EVENTS_MAX_STREAM_AGE": "0",
        "EVENTS_QUEUE_SIZE": "4096",
    }
    args = ["--timeout-graceful-shutdown", "60", "--backlog", "4096"]
    one_port, two_port = free_port(), free_port()
    with ExitStack() as stack:
        one = stack.enter_context(start_uvicorn(env, args=args, port=one_port))
        two = stack.enter_context(start_uvicorn(env, args=args, port=two_port))
        nginx_port = stack.enter_context(nginx_in_front_of(one_port, two_port))
        start = await asyncio.to_thread(publish, topic, data=-1)
        clients = [Client(nginx_port, topic, start) for _ in range(CLIENTS)]
        tasks = [asyncio.create_task(client.run()) for client in clients]
        published: list[int] = []
        stop_publishing = threading.Event()

        def publisher() -> None:
            number = 0
            next_at = time.monotonic()
            while not stop_publishing.is_set():
                # Each under its own event name: a worker that falls behind
                # merges invalidations of one topic and name (overload.md).
                publish(topic, data=number, event=f"n{number}")
                published.append(number)
                number += 1
                next_at += 1 / PUBLISH_RATE
                time.sleep(max(0.0, next_at - time.monotonic()))

        try:
            await asyncio.to_thread(
                wait_for, lambda: streams(one) + streams(two) == CLIENTS, 120, "every client's stream open"
            )
            on_one = streams(one)
            assert on_one > CLIENTS // 4, f"nginx gave worker one only {on_one} of {CLIENTS} streams"
            thread = threading.Thread(target=publisher, daemon=True)
            thread.start()
            await asyncio.to_thread(wait_for, lambda: len(published) >= PUBLISH_RATE, 10, "a second of events")

            # The deploy: stop worker one (SIGTERM), then start it again on its port.
            stopped_at = time.monotonic()
            took = await asyncio.to_thread(one.stop, signal.SIGTERM, 90)
            restarted = stack.enter_context(start_uvicorn(env, args=args, port=one_port))
            counts: list[int] = []

            def all_back() -> bool:
                counts[:] = [streams(restarted), streams(two)]
                return sum(counts) == CLIENTS

            try:
                await asyncio.to_thread(wait_for, all_back, 120, "every client back")
            except AssertionError:
                from collections import Counter

                states = Counter(client.state for client in clients)
                dead = [repr(task.exception()) for task in tasks if task.done() and not task.cancelled()][:3]
                raise AssertionError(
                    f"streams on the restarted and the other worker: {counts}; clients: {dict(states)}; ended: {dead}"
                ) from None
            stop_publishing.set()
            thread.join(10)
            last = published[-1]
            await asyncio.to_thread(
                wait_for,
                lambda: all(client.numbers and client.numbers[-1] == last for client in clients),
                60,
                "every client to get the last event",
            )
        finally:
            stop_publishing.set()
            for client in clients:
                client.done = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        reconnects = [at for client in clients for at in client.reconnects]
        peak = peak_rate(reconnects)
        print(
            f"\n{CLIENTS} streams, {on_one} on the stopped worker, DRAIN_RATE {DRAIN_RATE}: it exited "
            f"{took:.1f} s after SIGTERM; {len(reconnects)} reconnects, peak {peak:.0f} per second "
            f"(over {time.monotonic() - stopped_at:.1f} s)"
        )
        assert len(reconnects) >= on_one, "not every stream of the stopped worker reconnected"
        for client in clients:
            assert client.numbers == published, "an event was lost, repeated or out of order"
        assert peak <= 2 * DRAIN_RATE, f"reconnects peaked at {peak:.0f}/s, over twice DRAIN_RATE ({DRAIN_RATE}/s)"
        # Spread, not at once: ending ~on_one streams at DRAIN_RATE takes about on_one / DRAIN_RATE seconds.
        assert took >= 0.8 * on_one / DRAIN_RATE - 0.5, (
            f"{on_one} streams ended in {took:.1f} s: faster than DRAIN_RATE"
        )
