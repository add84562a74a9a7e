"""Starting real servers for the tests: uvicorn (the app) and redis-server.

Each is a subprocess on a free loopback port, waited for with a deadline,
stopped at teardown. Logs go to files whose tail is shown when start-up fails.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent


def free_port(offset: int = 0) -> int:
    """A free port below the kernel's ephemeral range (and ``port + offset`` free too, with ``offset``).

    Outgoing connections take their source ports from the ephemeral range:
    a port picked there can be taken by one while its server is down, and a
    test that restarts a server (Redis, a worker) on its port would then
    wait for it forever.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(500):
        port = random.randint(10000, max(10001, low - 1 - offset))
        try:
            with socket.socket() as one, socket.socket() as two:
                one.bind(("127.0.0.1", port))
                if offset:
                    two.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        return port
    raise AssertionError("no free port below the ephemeral range")


def metric(srv: UvicornServer, name: str) -> float:
    """The value of the Prometheus metric ``name`` (without labels) that ``srv`` reports."""
    text = httpx.get(f"{srv.url}/events/metrics/", timeout=5).text
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not in metrics:\n{text}"
    return float(match.group(1))


def wait_for(condition, timeout: float, message: str, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll ``condition()`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {message}")
        time.sleep(interval)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class UvicornServer:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    root_path: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> float:
        """Send ``sig`` and wait for the process (and its workers) to exit; return the seconds taken."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
                raise AssertionError(f"uvicorn did not exit within {timeout} s of signal {sig}") from None
        return time.monotonic() - started


@contextlib.contextmanager
def start_uvicorn(
    env: dict[str, str],
    args: list[str] | None = None,
    port: int | None = None,
    timeout: float = 30.0,
    command: list[str] | None = None,
    cwd: Path = ROOT,
) -> Iterator[UvicornServer]:
    """Start the project under uvicorn (or ``command`` in ``cwd``, which must listen on ``port``)."""
    port = port or free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="uvicorn-"))
    log_path = log_dir / "server.log"
    full_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    command = command or [
        sys.executable, "-m", "uvicorn", "project.asgi:application",
        "--host", "127.0.0.1", "--port", str(port),
        "--lifespan", "on", "--loop", "uvloop", "--http", "httptools",
        "--timeout-graceful-shutdown", "5", "--no-access-log",
        *(args or []),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    root_path = ""
    if args and "--root-path" in args:
        root_path = args[args.index("--root-path") + 1]
    srv = UvicornServer(port, process, log_path, root_path, env)

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"uvicorn exited with {process.returncode} at start-up:\n{_tail(log_path)}")
        try:
            return httpx.get(f"{srv.url}/events/health/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, timeout, f"uvicorn on port {port} to answer /events/health/")
        yield srv
    finally:
        if process.poll() is None:
            terminate(process, 15)
        shutil.rmtree(log_dir, ignore_errors=True)


def terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if ``process`` has not exited within ``timeout`` seconds."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


class RedisProcess:
    """Stopping a redis-server (or sentinel) this suite started: gently, or with SIGKILL."""

    process: subprocess.Popen[bytes] | None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to replicas, as a crashed host would die."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None


@dataclass
class RedisServer(RedisProcess):
    port: int
    process: subprocess.Popen[bytes] | None
    dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=1)

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            raise AssertionError("redis-server is not installed; run `make test`, which installs it")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def up() -> bool:
            try:
                with self.client() as client:
                    return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(up, 10, f"redis-server on port {self.port}")

    def restart(self) -> None:
        self.stop()
        self.start()


HistoryEntry = tuple[str, dict[str, str]]


def history(client: redis.Redis, minimum: str = "-", maximum: str = "+") -> list[HistoryEntry]:
    """The entries of the history stream (XRANGE) from a ``decode_responses=True`` client, typed."""
    from events.backends.connection import history_key

    return cast("list[HistoryEntry]", client.xrange(history_key(), min=minimum, max=maximum))


def newest_history_id(client: redis.Redis) -> str | None:
    from events.backends.connection import history_key

    entries = cast("list[HistoryEntry]", client.xrevrange(history_key(), count=1))
    return entries[0][0] if entries else None


def command_calls(client: redis.Redis) -> dict[str, int]:
    """How many times the server behind ``client`` ran each command (``INFO commandstats``)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def start_redis_server(port: int) -> RedisServer:
    srv = RedisServer(port, None, Path(tempfile.mkdtemp(prefix="redis-")))
    srv.start()
    return srv


@dataclass
class ClusterNode(RedisProcess):
    port: int
    process: subprocess.Popen[bytes] | None
    dir: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=5)

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
             # Healthy shards keep serving while one is failing over (see docs/howto/redis.md, Redis Cluster).
             "--cluster-require-full-coverage", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def info(self, section: str) -> dict[str, Any]:
        with self.client() as client:
            return dict(client.info(section))

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class RedisClusterServers:
    """A local Redis Cluster: ``primaries`` primaries with ``replicas`` replicas each."""

    nodes: list[ClusterNode]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(node.address for node in self.nodes[:3])

    def live(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.alive]

    def slots(self) -> list[tuple[int, int, int]]:
        """``(start, end, port of the primary)`` for every slot range, as a live node sees it."""
        for node in self.live():
            try:
                with node.client() as client:
                    ranges = client.execute_command("CLUSTER", "SLOTS")
            except redis.RedisError:
                continue
            return [(int(r[0]), int(r[1]), int(r[2][1])) for r in ranges]
        raise AssertionError("no cluster node answers")

    def owner(self, slot: int) -> ClusterNode:
        for start, end, port in self.slots():
            if start <= slot <= end:
                return next(node for node in self.nodes if node.port == port)
        raise AssertionError(f"slot {slot} is not covered")

    def primaries(self) -> list[ClusterNode]:
        ports = {port for _, _, port in self.slots()}
        return [node for node in self.nodes if node.port in ports]

    def all_ok(self) -> bool:
        for node in self.live():
            try:
                if node.info("cluster")["cluster_enabled"] != 1:
                    return False
                with node.client() as client:
                    info = client.execute_command("CLUSTER", "INFO")
                    text = info.decode() if isinstance(info, bytes) else str(info)
                    if "cluster_state:ok" not in text:
                        return False
            except redis.RedisError:
                return False
        return True

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        for node in self.nodes:
            shutil.rmtree(node.dir, ignore_errors=True)


def free_cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free too."""
    return free_port(10000)


def start_redis_cluster(primaries: int = 3, replicas: int = 1) -> RedisClusterServers:
    """Start ``primaries * (1 + replicas)`` cluster-enabled redis-servers and join them."""
    if shutil.which("redis-cli") is None:
        raise AssertionError("redis-cli is not installed; run `make test`, which installs it")
    nodes = [
        ClusterNode(free_cluster_port(), None, Path(tempfile.mkdtemp(prefix="redis-cluster-")))
        for _ in range(primaries * (1 + replicas))
    ]
    cluster = RedisClusterServers(nodes)
    try:
        for node in nodes:
            node.start()

        def up(node: ClusterNode = nodes[-1]) -> bool:
            try:
                with node.client() as client:
                    return bool(client.ping())
            except redis.RedisError:
                return False

        for node in nodes:
            wait_for(lambda node=node: up(node), 10, f"redis-server on port {node.port}")
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *(node.address for node in nodes),
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            capture_output=True, timeout=60,
        )  # fmt: skip
        if created.returncode != 0:
            raise AssertionError(
                f"redis-cli --cluster create failed:\n{created.stdout.decode()}{created.stderr.decode()}"
            )
        wait_for(cluster.all_ok, 30, "the cluster to be ok on every node", interval=0.1)

        def replicas_attached() -> bool:
            slaves = sum(node.info("replication")["role"] == "slave" for node in nodes)
            return bool(slaves == primaries * replicas)

        wait_for(replicas_attached, 30, "every replica to attach", interval=0.1)
    except BaseException:
        cluster.stop()
        raise
    return cluster
