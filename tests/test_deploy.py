"""The deploy/ files agree with each other and with the app's timings.

Each number here is one side of a rule that breaks the site silently when
violated, e.g. a heartbeat slower than nginx's read timeout cuts every quiet
stream. The browser tests prove the rules with short timings; these check the
shipped values.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from events.conf import Settings, declarations
from tests.browser.nginx import PREFIX, SITE_CONF, find_nginx, start_nginx
from tests.browser.site import UNIT, unit_exec_start, unit_uvicorn_args
from tests.servers import ROOT, UvicornServer

ENV_EXAMPLE = ROOT / "deploy" / "env.example"
CLIENT_JS = ROOT / "events" / "static" / "events" / "client.js"


def nginx_values(directive: str) -> list[str]:
    return re.findall(rf"^\s*{directive}\s+([^;]+);", SITE_CONF.read_text(), re.MULTILINE)


def seconds(value: str) -> float:
    return float(value.removesuffix("s"))


def option(name: str) -> str:
    args = unit_exec_start()
    return args[args.index(name) + 1]


def env_example() -> dict[str, str]:
    lines = [line for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_app_timings_are_under_nginx_read_timeout() -> None:
    read_timeouts = {seconds(value) for value in nginx_values("proxy_read_timeout")}
    assert read_timeouts == {60.0}
    env = env_example()
    for heartbeat in (Settings.HEARTBEAT.default, float(env["EVENTS_HEARTBEAT"])):
        assert heartbeat * 2 <= 60, "a heartbeat must come well within nginx's read timeout"
    for longpoll in (Settings.LONGPOLL_TIMEOUT.default, float(env["EVENTS_LONGPOLL_TIMEOUT"])):
        assert longpoll + 10 <= 60, "the app must answer a long-poll before nginx gives up"
    # The JS client aborts a long-poll after the app would answer, before nginx would.
    poll_timeout = int(re.search(r"pollTimeout: (\d+),", CLIENT_JS.read_text()).group(1)) / 1000  # type: ignore[union-attr]
    assert Settings.LONGPOLL_TIMEOUT.default < poll_timeout < 60


def test_the_deployed_site_serves_metrics_to_localhost_only() -> None:
    # The app serves metrics only when told to (a 404 by default)...
    assert Settings.METRICS.default is False
    assert env_example()["EVENTS_METRICS"] == "1"
    # ...and nginx keeps them private.
    block = SITE_CONF.read_text().split(f"location {PREFIX}/events/metrics/ {{", 1)[1].split("}", 1)[0]
    rules = [line.strip() for line in block.splitlines() if line.strip().startswith(("allow", "deny"))]
    assert rules == ["allow 127.0.0.1;", "allow ::1;", "deny all;"]


def test_nginx_strips_the_prefix_that_uvicorn_puts_back() -> None:
    assert option("--root-path") == PREFIX
    text = SITE_CONF.read_text()
    assert f"location {PREFIX}/ {{\n        proxy_pass http://fear_tracker/;" in text
    for path in ("events/stream/", "events/poll/"):
        block = text.split(f"location {PREFIX}/{path} {{", 1)[1].split("}", 1)[0]
        assert f"proxy_pass http://fear_tracker/{path};" in block
        for line in ("proxy_buffering off;", "gzip off;", "error_page 502 504 = @drop;"):
            assert line in block, (path, line)


def test_connections_and_shutdown_timeouts_fit_together() -> None:
    # nginx must close idle upstream connections before uvicorn does.
    assert seconds(nginx_values("keepalive_timeout")[0]) < int(option("--timeout-keep-alive"))
    # systemd must give uvicorn's graceful shutdown time to finish.
    stop = int(re.search(r"^TimeoutStopSec=(\d+)", UNIT.read_text(), re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert stop > int(option("--timeout-graceful-shutdown"))
    args = unit_uvicorn_args()
    for flag in ("--proxy-headers", "--lifespan"):
        assert flag in args
    assert option("--lifespan") == "on"
    assert "--workers" in unit_exec_start()


def test_env_example_names_only_settings_that_exist() -> None:
    settings_py = (ROOT / "project" / "settings.py").read_text()
    events_variables = {setting.env for setting in declarations() if setting.env}
    for name in env_example():
        assert f'"{name}"' in settings_py or name in events_variables, (
            f"deploy/env.example sets {name}, which neither project/settings.py nor events/conf.py reads"
        )


def test_systemd_paths_match_the_env_example() -> None:
    env = env_example()
    unit = UNIT.read_text()
    assert f"ReadWritePaths={Path(env['DJANGO_DB_PATH']).parent}" in unit
    assert f"alias {env['DJANGO_STATIC_ROOT']}/;" in SITE_CONF.read_text()


def test_the_site_fits_in_debians_nginx_conf(tmp_path: Path) -> None:
    """As installed: included by Debian's own nginx.conf, unchanged, it passes `nginx -t`."""
    debian_conf = Path("/etc/nginx/nginx.conf")
    assert debian_conf.exists(), "nginx is required by the tests: run `make test` or `apt-get install -y nginx`"
    conf = debian_conf.read_text()
    assert "include /etc/nginx/sites-enabled/*;" in conf
    conf = conf.replace("include /etc/nginx/sites-enabled/*;", f"include {SITE_CONF};")
    conf = re.sub(r"^pid .*;$", f"pid {tmp_path}/nginx.pid;", conf, flags=re.MULTILINE)
    (tmp_path / "nginx.conf").write_text(conf)
    command = [find_nginx(), "-t", "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "error.log")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


MAIN_CONTEXT = ROOT / "deploy" / "nginx" / "nginx-main.conf"


def location_block(path: str) -> str:
    return SITE_CONF.read_text().split(f"location {PREFIX}/{path} {{", 1)[1].split("}", 1)[0]


def test_nginx_limits_what_a_client_may_send_and_open() -> None:
    # Request line and headers, their timing (slowloris), bodies.
    assert nginx_values("large_client_header_buffers") == ["4 8k"]
    assert seconds(nginx_values("client_header_timeout")[0]) <= 15
    assert seconds(nginx_values("client_body_timeout")[0]) <= 15
    text = SITE_CONF.read_text()
    assert "limit_conn_zone $binary_remote_addr zone=events_conn:10m;" in text
    assert re.search(r"limit_req_zone \$binary_remote_addr zone=events_req:10m rate=\d+r/s;", text)
    for path in ("events/stream/", "events/poll/"):
        block = location_block(path)
        for line in (
            "client_max_body_size 1k;",
            "limit_conn events_conn 50;",
            "limit_req zone=events_req burst=40 nodelay;",
            # Over a limit the connection is dropped, which EventSource retries (a 503 it would not).
            "limit_conn_status 444;",
            "limit_req_status 444;",
        ):
            assert line in block, (path, line)


def main_context_values() -> dict[str, int]:
    text = MAIN_CONTEXT.read_text()
    found = dict(re.findall(r"^\s*(worker_rlimit_nofile|worker_connections)\s+(\d+);", text, re.MULTILINE))
    return {name: int(value) for name, value in found.items()}


def test_nginx_has_connections_for_the_streams() -> None:
    values = main_context_values()
    # Each stream holds two nginx connections: thousands of streams per nginx worker, not Debian's ~380.
    assert values["worker_connections"] // 2 >= 8000
    assert values["worker_rlimit_nofile"] >= values["worker_connections"]
    # The app server may hold as many streams as it has descriptors for.
    limit = int(re.search(r"^LimitNOFILE=(\d+)", UNIT.read_text(), re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert limit >= values["worker_connections"] // 2


def test_the_main_context_settings_fit_in_debians_nginx_conf(tmp_path: Path) -> None:
    """Debian's nginx.conf with deploy/nginx/nginx-main.conf's values in it, and the site: `nginx -t` passes."""
    conf = Path("/etc/nginx/nginx.conf").read_text()
    # In place of its events block, as the file says: after Debian's
    # modules-enabled include, whose load_module lines must come first.
    main_context = MAIN_CONTEXT.read_text()
    conf, replaced = re.subn(r"^events\s*\{[^}]*\}", lambda _: main_context, conf, count=1, flags=re.MULTILINE)
    assert replaced == 1, "Debian's nginx.conf has no events block to replace"
    conf = conf.replace("include /etc/nginx/sites-enabled/*;", f"include {SITE_CONF};")
    conf = re.sub(r"^pid .*;$", f"pid {tmp_path}/nginx.pid;", conf, flags=re.MULTILINE)
    (tmp_path / "nginx.conf").write_text(conf)
    command = [find_nginx(), "-t", "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "error.log")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


async def test_the_shipped_nginx_refuses_bodies_and_huge_headers_on_the_event_endpoints(
    server: UvicornServer, tmp_path: Path, topic: str
) -> None:
    """Real nginx from the shipped site file, in front of a real uvicorn."""
    import asyncio

    proxy = start_nginx(upstream_port=server.port, static_root=tmp_path, read_timeout=2)
    try:
        port = int(proxy.origin.rsplit(":", 1)[1])

        async def answer(head: str) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(head.replace("\n", "\r\n").encode() + b"\r\n")
                await writer.drain()
                return await asyncio.wait_for(reader.read(), 10)
            finally:
                writer.close()

        path = f"{PREFIX}/events/stream/?topic={topic}"
        body = await answer(f"GET {path} HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 2147483648\n")
        assert body.startswith(b"HTTP/1.1 413 "), body[:200]
        huge = await answer(f"GET {path} HTTP/1.1\nHost: 127.0.0.1\nX-Long: {'a' * 20000}\n")
        assert huge.startswith(b"HTTP/1.1 400 "), huge[:200]
        endless = await answer(f"GET {path}&x={'a' * 20000} HTTP/1.1\nHost: 127.0.0.1\n")
        assert endless.startswith(b"HTTP/1.1 414 "), endless[:200]
    finally:
        proxy.stop()
