"""A `make run` session is quiet: loading the demo logs no Python warning, and the page has a favicon."""

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from .servers import ROOT, UvicornServer
from .sse import open_stream


async def test_loading_the_demo_page_logs_no_warning_and_finds_every_asset(
    start_server: Callable[..., UvicornServer], topic: str, tmp_path: Path
) -> None:
    # As `make run` does: DEBUG on (the default), a migrated and seeded database.
    env = {"DJANGO_DB_PATH": str(tmp_path / "db.sqlite3")}
    for command in (["migrate", "--noinput", "-v0"], ["seed_demo"]):
        subprocess.run(
            [sys.executable, "manage.py", *command], cwd=ROOT, env={**os.environ, **env}, check=True, timeout=60,
            capture_output=True,
        )  # fmt: skip
    srv = start_server(env)
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text)
        assert any(asset.endswith("favicon.svg") for asset in assets), page.text
        assert re.search(r'<link rel="icon" href="/static/[^"]+"', page.text)
        for asset in assets:
            response = await client.get(asset)
            assert response.status_code == 200, asset
            assert response.content, asset
            # Conditional requests still work (304 without a body).
            again = await client.get(asset, headers={"If-Modified-Since": response.headers["Last-Modified"]})
            assert again.status_code == 304, asset
        assert (await client.get("/api/board/")).status_code == 200
        favicon = await client.get("/favicon.ico", follow_redirects=True)
        assert favicon.status_code == 200
        assert favicon.headers["content-type"] == "image/svg+xml"
    async with open_stream(f"{srv.url}/events/stream/?topic={topic}") as stream:
        await stream.next_frame()
    log = srv.log()
    assert "Warning" not in log, log
    assert "StreamingHttpResponse" not in log, log
    assert "Not Found" not in log, log
