"""Starting ``manage.py runserver`` as a developer's terminal does, for the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from .servers import ROOT, free_port, wait_for
from .sse import open_attached_stream, stop_and_read_to_end


@dataclass
class Runserver:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ctrl_c(self) -> None:
        """SIGINT to the whole process group (the reloader and its child), as a terminal's Ctrl-C."""
        os.killpg(self.process.pid, signal.SIGINT)


@contextmanager
def start_runserver(
    env: dict[str, str],
    *args: str,
    cwd: Path = ROOT,
    python: str = sys.executable,
    ready: str = "/events/health/",
    inherit: bool = True,
) -> Iterator[Runserver]:
    """``python manage.py runserver 127.0.0.1:<free port> *args`` in its own session, waited for.

    ``env`` is added to this process's environment, or is the whole of it with ``inherit=False``.
    """
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="runserver-")) / "server.log"
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            [python, "manage.py", "runserver", f"127.0.0.1:{port}", *args],
            cwd=cwd, env={**(os.environ if inherit else {}), "PYTHONUNBUFFERED": "1", **env},
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    server = Runserver(f"http://127.0.0.1:{port}", process, log_path)

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"runserver exited with {process.returncode}:\n{server.log()}")
        try:
            return httpx.get(server.url + ready, timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 60, f"runserver to answer {ready}")
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


async def ctrl_c_ends_streams_cleanly(server: Runserver, topic: str, streams: int = 3) -> None:
    """Open streams, press Ctrl-C: each gets its closing comment and a clean end; the server exits."""
    raw = [await open_attached_stream(f"{server.url}/events/stream/?topic={topic}", timeout=10) for _ in range(streams)]
    try:
        bodies, _ = await stop_and_read_to_end(server.ctrl_c, server.process, raw, 5)
    finally:
        for s in raw:
            await s.close()
    for body in bodies:
        assert b": closing: shutdown; reconnect\n\n" in body, body
