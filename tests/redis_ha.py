"""Real Redis set-ups for the HA and TLS tests: a Sentinel-watched pair, a TLS server.

Everything runs on loopback, on free ports, in temporary directories, and is
stopped at teardown. Nothing here is mocked: these are ``redis-server``
processes (``--sentinel`` for the sentinels) and certificates made by
``openssl``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import redis

from .servers import RedisProcess, free_port, wait_for

SERVICE = "mymaster"
# The Redis servers' password, the sentinels' own, and the replication
# account (a separate user, so a test can cut replication off at will).
DATA_PASSWORD = "data-Secret-7f3a"
SENTINEL_PASSWORD = "sentinel-Secret-91c2"
REPL_USER, REPL_PASSWORD = "repl", "repl-Secret-55d0"
# Short enough for a quick test, long enough to observe the outage: a new
# stream waits up to 2 s for the hub before it is told to retry, and the
# sentinels may see the primary as down up to 1 s (their PING period) early.
DOWN_AFTER_MS = 4000


def _require_redis_server() -> None:
    if shutil.which("redis-server") is None:
        raise AssertionError("redis-server is not installed; run `make test`, which installs it")


@dataclass
class Process(RedisProcess):
    """One redis-server (or sentinel) process with its own config file and directory."""

    port: int
    dir: Path
    args: list[str]
    password: str | None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        _require_redis_server()
        log = open(self.dir / "redis.log", "wb")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        log.close()

        def up() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"redis on port {self.port} exited:\n{self.log()}")
            try:
                with self.client() as client:
                    return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(up, 10, f"redis on port {self.port}")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, socket_connect_timeout=1, decode_responses=True)

    def log(self) -> str:
        try:
            return (self.dir / "redis.log").read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"


def _data_node(replica_of: int | None = None) -> Process:
    port, directory = free_port(), Path(tempfile.mkdtemp(prefix="redis-ha-"))
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        'save ""',
        "appendonly no",
        f"dir {directory}",
        f"requirepass {DATA_PASSWORD}",
        f"user {REPL_USER} on >{REPL_PASSWORD} ~* &* +@all",
        f"masteruser {REPL_USER}",
        f"masterauth {REPL_PASSWORD}",
    ]
    if replica_of is not None:
        lines.append(f"replicaof 127.0.0.1 {replica_of}")
    (directory / "redis.conf").write_text("\n".join(lines) + "\n")
    return Process(port, directory, ["redis-server", str(directory / "redis.conf")], DATA_PASSWORD)


def _sentinel(primary_port: int) -> Process:
    port, directory = free_port(), Path(tempfile.mkdtemp(prefix="redis-sentinel-"))
    lines = [
        f"port {port}",
        "bind 127.0.0.1",
        f"dir {directory}",
        f"requirepass {SENTINEL_PASSWORD}",
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2",
        f"sentinel auth-pass {SERVICE} {DATA_PASSWORD}",
        f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
        f"sentinel failover-timeout {SERVICE} 10000",
        f"sentinel parallel-syncs {SERVICE} 1",
    ]
    # The sentinel rewrites its config file, so it gets its own writable copy.
    (directory / "sentinel.conf").write_text("\n".join(lines) + "\n")
    return Process(port, directory, ["redis-server", str(directory / "sentinel.conf"), "--sentinel"], SENTINEL_PASSWORD)


@dataclass
class SentinelSetup:
    """One primary, one replica, three sentinels watching them."""

    primary: Process
    replica: Process
    sentinels: list[Process] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://:{DATA_PASSWORD}@{hosts}/{SERVICE}/0?sentinel_password={SENTINEL_PASSWORD}"

    def primary_port(self) -> int | None:
        """The primary's port according to a majority of the sentinels (None if they disagree)."""
        ports = []
        for sentinel in self.sentinels:
            try:
                with sentinel.client() as client:
                    address = client.sentinel_get_master_addr_by_name(SERVICE)
            except redis.RedisError:
                continue
            if address:
                ports.append(int(address[1]))
        best = max(set(ports), key=ports.count, default=None)
        return best if best is not None and ports.count(best) >= 2 else None

    def stop(self) -> None:
        for process in [*self.sentinels, self.primary, self.replica]:
            process.stop()
            shutil.rmtree(process.dir, ignore_errors=True)


def start_sentinel_setup() -> SentinelSetup:
    primary = _data_node()
    primary.start()
    replica = _data_node(replica_of=primary.port)
    setup = SentinelSetup(primary, replica)
    try:
        replica.start()

        def replicating() -> bool:
            with replica.client() as client:
                return bool(client.info("replication").get("master_link_status") == "up")

        wait_for(replicating, 15, "the replica to sync with the primary")
        for _ in range(3):
            setup.sentinels.append(_sentinel(primary.port))
            setup.sentinels[-1].start()

        def all_known() -> bool:
            # Each sentinel must know the replica and the two other
            # sentinels, or a failover cannot be agreed on.
            for sentinel in setup.sentinels:
                with sentinel.client() as client:
                    state = client.sentinel_master(SERVICE)
                if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                    return False
            return True

        wait_for(all_known, 20, "the sentinels to discover the replica and each other", interval=0.1)
    except BaseException:
        setup.stop()
        raise
    return setup


# TLS -------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        raise AssertionError("openssl is not installed; run `make test`, which installs it")
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A throw-away certificate authority: (certificate, key)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
        "-keyout", str(key), "-out", str(cert), cwd=directory,
    )  # fmt: skip
    return cert, key


def issue_certificate(directory: Path, name: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by ``ca``: (certificate, key)."""
    cert, key, request = directory / f"{name}.crt", directory / f"{name}.key", directory / f"{name}.csr"
    extensions = directory / f"{name}.ext"
    extensions.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(request),
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
        "-days", "2", "-extfile", str(extensions), "-out", str(cert), cwd=directory,
    )  # fmt: skip
    return cert, key


@dataclass
class TLSRedis:
    """A redis-server that speaks TLS only, requiring client certificates from its CA."""

    process: Process
    dir: Path
    ca: Path
    client_cert: Path
    client_key: Path
    wrong_ca: Path

    def url(self, ca: Path | None = None) -> str:
        return (
            f"rediss://127.0.0.1:{self.process.port}/0?ssl_ca_certs={ca or self.ca}"
            f"&ssl_certfile={self.client_cert}&ssl_keyfile={self.client_key}&ssl_cert_reqs=required"
        )

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url(), socket_connect_timeout=2, decode_responses=True)

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_tls_redis() -> TLSRedis:
    _require_redis_server()
    directory = Path(tempfile.mkdtemp(prefix="redis-tls-"))
    ca = make_ca(directory, "test-ca")
    wrong_ca, _ = make_ca(directory, "other-ca")
    server_cert, server_key = issue_certificate(directory, "redis", ca)
    client_cert, client_key = issue_certificate(directory, "app", ca)
    port = free_port()
    args = [
        "redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(server_cert), "--tls-key-file", str(server_key),
        "--tls-ca-cert-file", str(ca[0]), "--tls-auth-clients", "yes",
        "--save", "", "--appendonly", "no", "--dir", str(directory),
    ]  # fmt: skip
    process = Process(port, directory, args, None)
    tls = TLSRedis(process, directory, ca[0], client_cert, client_key, wrong_ca)
    # Process.client() speaks plain TCP: wait with a TLS client instead.
    process.client = tls.client  # type: ignore[method-assign]
    try:
        process.start()
    except BaseException:
        tls.stop()
        raise
    return tls
