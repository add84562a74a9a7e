"""The app installs into someone else's project, following the README's install steps alone.

Exactly what a user does: build a wheel from (a copy of) the checkout, make a
fresh virtualenv holding an existing Django site (`django-admin
startproject`), install the wheel there, apply the README's numbered steps
(its code blocks, verbatim; tests/test_docs.py keeps them equal to
docs/installation.md's), then `manage.py check`, `findstatic`, serve with
uvicorn and receive a `publish_event` over SSE and over the long-poll, then
`manage.py runserver` alone: a stream's first bytes, `client.js`. Nothing
from this repository is importable in that virtualenv but what the wheel
installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import django
import httpx
import pytest
import redis

from .runserver import ctrl_c_ends_streams_cleanly, start_runserver
from .servers import ROOT, free_port, start_uvicorn
from .sse import open_stream

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

# Left behind when copying the checkout: virtualenvs, caches, build output.
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv*", ".run", "__pycache__", ".*_cache", "*.egg-info", "build", "dist",
    "staticfiles", "test-artifacts", "results", "db.sqlite3",
)  # fmt: skip

# A README code block to apply: its first line names the file and how.
README_STEP = re.compile(r"```python\n\s*# mysite/(\S+) \((add at the end|the whole file)\)\n(.*?)```", re.DOTALL)


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 240) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, (
        f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def readme_steps() -> list[tuple[str, str, str]]:
    """(file, how, code) of the README's install steps, in order; the code dedented."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Installation", 1)[1].split("\n## ", 1)[0]
    steps = []
    for name, how, code in README_STEP.findall(section):
        lines = code.splitlines()
        indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
        steps.append((name, how, "\n".join(line[indent:] for line in lines) + "\n"))
    return steps


def pinned(*names: str) -> str:
    """Constraints pinning ``names`` to the versions this suite runs (so pip's cache serves them)."""
    lines = []
    for name in names:
        try:
            lines.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("install")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def wheel(workdir: Path) -> Path:
    """A wheel built from a copy of the checkout, as `pip wheel` builds it."""
    source = workdir / "checkout"
    shutil.copytree(ROOT, source, ignore=COPY_IGNORE)
    dist = workdir / "dist"
    run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(source)],
        workdir,
        dict(os.environ),
    )
    (built,) = dist.glob("django_live_events-*.whl")
    return built


def test_the_wheel_holds_the_events_package_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    outside = [n for n in names if not n.startswith(("events/", "django_live_events-"))]
    assert outside == [], f"the wheel installs more than the events package: {outside}"
    for needed in (
        "events/__init__.py",
        "events/py.typed",
        "events/static/events/client.js",
        "events/management/commands/publish_event.py",
        "events/management/commands/runserver.py",
        "events/urls.py",
    ):
        assert needed in names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    requires = [line.split(": ", 1)[1] for line in meta.splitlines() if line.startswith("Requires-Dist: ")]
    # Ranges, not pins, so a project's own Django stays.
    assert "Django<7,>=5.2" in requires, requires
    assert not any("==" in r.split(";")[0] for r in requires), requires


async def test_a_new_site_follows_the_readme_and_receives_events(wheel: Path, workdir: Path, redis_url: str) -> None:
    venv = workdir / "venv"
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    site = workdir / "site"
    site.mkdir()
    # A clean environment: nothing from this checkout or its virtualenv leaks in.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    }
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    constraints = workdir / "constraints.txt"
    constraints.write_text(
        pinned("redis", "prometheus-client", "uvicorn", "uvloop", "httptools", "asgiref", "sqlparse")
    )

    # An existing site, on a Django older than the one requirements.txt pins
    # (on the Django 6 run: that 6.x), made the usual way.
    existing_django = "5.2.1" if django.VERSION[:2] == (5, 2) else django.__version__
    run([sys.executable, "-m", "venv", str(venv)], workdir, env)
    run([str(python), "-m", "pip", "install", "-q", f"Django=={existing_django}", "-c", str(constraints)], workdir, env)
    run([str(bin_dir / "django-admin"), "startproject", "mysite", str(site)], workdir, env)

    # Step 1: install. The site keeps its Django.
    run([str(python), "-m", "pip", "install", "-q", str(wheel), "uvicorn[standard]", "-c", str(constraints)], site, env)
    installed = run([str(python), "-c", "import django; print(django.__version__)"], site, env).strip()
    assert installed == existing_django
    where = run([str(python), "-c", "import events; print(events.__file__)"], site, env).strip()
    assert where.startswith(str(venv)), f"events imported from {where}, not from the installed wheel"

    # Steps 2-4: the README's code blocks, verbatim.
    steps = readme_steps()
    assert [name for name, _, _ in steps] == ["settings.py", "urls.py", "asgi.py"], steps
    for name, how, code in steps:
        target = site / "mysite" / name
        if how == "the whole file":
            target.write_text(code)
        else:
            target.write_text(target.read_text() + "\n" + code)
    # This test's own Redis and a prefix no one else uses.
    prefix = f"install-{uuid.uuid4().hex[:8]}"
    with (site / "mysite" / "settings.py").open("a") as settings_file:
        settings_file.write(f"\nEVENTS.update({{'REDIS_URL': {redis_url!r}, 'PREFIX': {prefix!r}}})\n")

    try:
        # Step 5: check, static files, serve.
        manage = [str(python), "manage.py"]
        out = run([*manage, "check"], site, env)
        assert "System check identified no issues" in out, out
        found = run([*manage, "findstatic", "events/client.js"], site, env)
        assert str(venv) in found, found

        command = [
            str(bin_dir / "uvicorn"), "mysite.asgi:application", "--host", "127.0.0.1", "--port", "{port}",
            "--lifespan", "on", "--loop", "uvloop", "--http", "httptools", "--timeout-graceful-shutdown", "5",
        ]  # fmt: skip
        await check_served_site(site, env, command, manage)
        await check_runserver(site, env, python, topic=f"dev-{uuid.uuid4().hex[:8]}")
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()


async def check_runserver(site: Path, env: dict[str, str], python: Path, topic: str) -> None:
    """`manage.py runserver` on the fresh site (DEBUG=True, as startproject makes it): streams and client.js."""
    with start_runserver(env, cwd=site, python=str(python), inherit=False) as server:
        async with httpx.AsyncClient(timeout=10) as client:
            script = await client.get(f"{server.url}/static/events/client.js")
        assert script.status_code == 200, script.text
        async with open_stream(f"{server.url}/events/stream/?topic={topic}") as stream:
            first = await stream.next_frame(timeout=10)
            assert first is not None and first.get("retry") is not None
        await ctrl_c_ends_streams_cleanly(server, topic)
        log = server.log()
    assert server.process.returncode == 0, log
    assert "Traceback" not in log, log


async def check_served_site(site: Path, env: dict[str, str], command: list[str], manage: list[str]) -> None:
    port = free_port()
    command = [part.replace("{port}", str(port)) for part in command]
    server_env = {**env, "DJANGO_SETTINGS_MODULE": "mysite.settings"}
    topic = f"news-{uuid.uuid4().hex[:8]}"
    with start_uvicorn(server_env, port=port, command=command, cwd=site) as srv:
        # Resuming from an id, so the event arrives whether or not the stream
        # had subscribed when it was published.
        before = run([*manage, "publish_event", topic], site, env).strip()
        async with open_stream(f"{srv.url}/events/stream/?topic={topic}&last_event_id={before}") as stream:
            first = run([*manage, "publish_event", topic, "--data", '{"id": 3}'], site, env).strip()
            frame = await stream.next_event(timeout=10)
            assert frame.id == first
            assert frame.event == "invalidate"
            assert frame.json == {"topic": topic, "data": {"id": 3}}
            async with httpx.AsyncClient(timeout=10) as client:
                # Safe defaults: metrics are off; health names no topic.
                assert (await client.get(f"{srv.url}/events/metrics/")).status_code == 404
                health = await client.get(f"{srv.url}/events/health/")
                assert health.status_code == 200
                assert topic not in health.text

        second = run([*manage, "publish_event", topic], site, env).strip()
        async with httpx.AsyncClient(timeout=10) as client:
            poll = await client.get(f"{srv.url}/events/poll/?topic={topic}&since={first}")
        assert poll.status_code == 200
        assert poll.json() == {
            "events": [{"id": second, "topic": topic, "event": "invalidate", "data": None}],
            "last_id": second,
        }
        log = srv.log()
    assert "events_asgi_app" not in log, log
    assert "Warning" not in log, log
