"""Running the shipped nginx site (deploy/nginx/fear-tracker.conf) for the tests.

The site file is rendered, not rewritten: only the values a test must change
are replaced (listen address, upstream port, static root, read timeout), and
each replacement must match exactly as often as expected, so a change to the
shipped file that the tests no longer cover fails loudly. The site is wrapped
in a minimal main config like Debian's (``mime.types``, ``gzip on``) whose
paths all point into a temporary directory, and nginx runs in the foreground
as a subprocess on a free loopback port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.servers import ROOT, free_port, wait_for

SITE_CONF = ROOT / "deploy" / "nginx" / "fear-tracker.conf"
PREFIX = "/fear-tracker"
NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx")

MAIN_CONF = """\
{user}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;

events {{
    worker_connections 1024;
}}

http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    # As in Debian's nginx.conf: the event locations must turn it off.
    gzip on;
    include {dir}/site.conf;
}}
"""


def find_nginx() -> str:
    """The nginx binary; AssertionError (a failure, not a skip) when it is missing."""
    for candidate in NGINX_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise AssertionError(
        "nginx is required by the browser tests and is not installed. "
        "Run `make test` (it installs it) or `apt-get install -y nginx`."
    )


def render_site(text: str, *, port: int, upstream_port: int, static_root: Path, read_timeout: float) -> str:
    """The shipped site with test values; fails if the file no longer has the expected lines."""
    replacements = [
        ("listen 80;", f"listen 127.0.0.1:{port};", 1),
        ("listen [::]:80;", "", 1),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};", 1),
        ("alias /srv/fear-tracker/static/;", f"alias {static_root}/;", 1),
        ("proxy_read_timeout 60s;", f"proxy_read_timeout {read_timeout:g}s;", 2),
    ]
    for old, new, expected in replacements:
        found = text.count(old)
        if found != expected:
            raise AssertionError(
                f"{SITE_CONF.relative_to(ROOT)}: expected {old!r} {expected} time(s), found {found}; "
                "update tests/browser/nginx.py along with the config"
            )
        text = text.replace(old, new)
    return text


@dataclass
class Nginx:
    port: int
    dir: Path
    process: subprocess.Popen[bytes]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The site's root under the sub-path, with its trailing slash."""
        return f"{self.origin}{PREFIX}/"

    def access_log(self) -> str:
        return (self.dir / "access.log").read_text(errors="replace")

    def error_log(self) -> str:
        return (self.dir / "error.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # fast shutdown: open streams are cut
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def start_nginx(*, upstream_port: int, static_root: Path, read_timeout: float) -> Nginx:
    binary = find_nginx()
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="nginx-"))
    (directory / "tmp").mkdir()
    site = render_site(
        SITE_CONF.read_text(),
        port=port,
        upstream_port=upstream_port,
        static_root=static_root,
        read_timeout=read_timeout,
    )
    (directory / "site.conf").write_text(site)
    # As root, workers would run as "nobody", who cannot read the private
    # temporary directories: keep them as root (these are throw-away tests).
    user = "user root;" if os.geteuid() == 0 else ""
    (directory / "nginx.conf").write_text(MAIN_CONF.format(dir=directory, user=user))
    command = [binary, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-e", str(directory / "error.log")]
    check = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise AssertionError(f"nginx rejects the rendered deploy config:\n{check.stderr}\n--- site.conf ---\n{site}")
    process = subprocess.Popen(
        [*command, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )  # fmt: skip
    server = Nginx(port, directory, process)

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"nginx exited with {process.returncode}:\n{server.error_log()}")
        return _accepts(port)

    try:
        wait_for(up, 15, f"nginx to listen on port {port}")
    except BaseException:
        server.stop()
        raise
    return server
