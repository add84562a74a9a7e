"""Gunicorn with Uvicorn workers: SIGTERM to the master ends open streams cleanly and promptly."""

import signal
import sys
from functools import partial

from .conftest import SERVER_ENV
from .servers import free_port, start_uvicorn
from .sse import open_attached_stream, stop_and_read_to_end

WORKERS = 2
STREAMS = 40


def gunicorn_command(port: int) -> list[str]:
    # The production command of docs/howto/deploy.md (Gunicorn), on a test port.
    return [
        sys.executable, "-m", "gunicorn", "-k", "uvicorn_worker.UvicornWorker", "project.asgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS), "--graceful-timeout", "20",
    ]  # fmt: skip


async def test_sigterm_to_the_gunicorn_master_ends_open_streams_promptly(
    redis_url: str, events_prefix: str, topic: str
) -> None:
    port = free_port()
    env = {"REDIS_URL": redis_url, "EVENTS_PREFIX": events_prefix, **SERVER_ENV, "EVENTS_HEARTBEAT": "5"}
    with start_uvicorn(env, port=port, command=gunicorn_command(port)) as srv:
        streams = [await open_attached_stream(f"{srv.url}/events/stream/?topic={topic}") for _ in range(STREAMS)]
        try:
            terminate = partial(srv.process.send_signal, signal.SIGTERM)
            bodies, elapsed = await stop_and_read_to_end(terminate, srv.process, streams, 5)
        finally:
            for s in streams:
                await s.close()
        log = srv.log()
    # Well before --graceful-timeout (20 s): the workers did not wait for the streams.
    assert elapsed < 5, log
    assert srv.process.returncode == 0, log
    for body in bodies:
        assert b": closing: shutdown; reconnect\n\n" in body
    assert "Traceback" not in log, log
