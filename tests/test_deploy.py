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
from tests.browser.nginx import PREFIX, SITE_CONF, find_nginx
from tests.browser.site import UNIT, unit_exec_start, unit_uvicorn_args
from tests.servers import ROOT

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
