"""The demo site as deployed, for the browser tests: its database, static files and uvicorn.

uvicorn runs with the arguments of the shipped systemd unit
(deploy/systemd/fear-tracker.service), minus the listen address and the
number of workers, which the tests choose.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.servers import ROOT, UvicornServer, start_uvicorn

UNIT = ROOT / "deploy" / "systemd" / "fear-tracker.service"
APP = "project.asgi:application"
# Chosen by the tests, not taken from the unit.
TEST_CHOSEN = {"--host", "--port", "--workers"}

# nginx's proxy_read_timeout in the tests, and the app's timings well under it.
READ_TIMEOUT = 2.0
HEARTBEAT = 0.5
LONGPOLL_TIMEOUT = 1.5


def unit_exec_start() -> list[str]:
    """The command line of the unit's ExecStart=, continuation lines joined."""
    text = UNIT.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line.removeprefix("ExecStart="))
    raise AssertionError(f"{UNIT.relative_to(ROOT)} has no ExecStart=")


def unit_uvicorn_args() -> list[str]:
    """The unit's uvicorn options, without those the tests choose themselves."""
    command = unit_exec_start()
    if APP not in command:
        raise AssertionError(f"{UNIT.relative_to(ROOT)}: ExecStart does not serve {APP}: {command}")
    options = command[command.index(APP) + 1 :]
    kept: list[str] = []
    skip_value = False
    for arg in options:
        if skip_value:
            skip_value = False
        elif arg in TEST_CHOSEN:
            skip_value = True
        else:
            kept.append(arg)
    return kept


@dataclass
class DemoSite:
    """A deployed copy of the demo: its own SQLite file and collected static files."""

    dir: Path
    env: dict[str, str]

    @property
    def static_root(self) -> Path:
        return self.dir / "static"

    def manage(self, *args: str) -> str:
        """Run ``manage.py`` with the site's settings; return its output."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", **self.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    @contextmanager
    def serve(self, port: int | None = None) -> Iterator[UvicornServer]:
        """uvicorn as the systemd unit runs it (one worker), on ``port`` or a free one."""
        with start_uvicorn(self.env, args=unit_uvicorn_args(), port=port) as server:
            yield server


@contextmanager
def demo_site(redis_url: str, prefix: str) -> Iterator[DemoSite]:
    """Migrate, seed and collect the static files of a new demo site in a temporary directory."""
    directory = Path(tempfile.mkdtemp(prefix="demo-site-"))
    env = {
        "REDIS_URL": redis_url,
        "EVENTS_PREFIX": prefix,
        "EVENTS_HEARTBEAT": str(HEARTBEAT),
        "EVENTS_LONGPOLL_TIMEOUT": str(LONGPOLL_TIMEOUT),
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "browser-tests-secret-key-not-for-production",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_DB_PATH": str(directory / "db.sqlite3"),
        "DJANGO_STATIC_ROOT": str(directory / "static"),
    }
    site = DemoSite(directory, env)
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, directory, ignore_errors=True)
        site.manage("migrate", "--noinput", "-v0")
        site.manage("seed_demo")
        site.manage("collectstatic", "--noinput", "-v0")
        yield site
