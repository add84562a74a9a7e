#!/usr/bin/env python3
"""One command for the fan-out benchmark: our server and its baselines, same run.

    .venv/bin/python bench/run.py            # standard suite (~10-15 min on 2 cores)
    .venv/bin/python bench/run.py --quick    # smoke run (~2-3 min)
    .venv/bin/python bench/run.py --profile  # py-spy profile of our server during fan-out

Starts a private redis-server, then for each system (ours, naive, eventstream,
nchan) and worker count starts the server pinned to one core (taskset), runs
bench/loadgen.py pinned to the other core, stops the server. Writes
bench/results/RESULTS.md, bench/results/fanout.png and the raw JSON under
bench/results/raw/. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
import procfs  # noqa: E402
import report  # noqa: E402

MAIN_PY = os.path.join(ROOT, ".venv", "bin", "python")
ES_VENV = os.path.join(BENCH, ".venv-eventstream")
ES_PY = os.path.join(ES_VENV, "bin", "python")
NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"
SYSTEMS = ["ours", "naive", "eventstream", "nchan"]
# Not in the default suite: `--systems ours,ours-cluster` compares single-node and cluster fan-out.
CLUSTER_SYSTEMS = ["ours-cluster"]
HOST = "127.0.0.1"
HEARTBEAT = 15  # seconds, every system; also the idle measurement's window


def log(*parts):
    print("[run]", *parts, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# Descriptors a server process needs besides its streams (listening socket,
# Redis, logs, libraries); a level needs N / workers + this per process.
FD_MARGIN = 200
# The big levels (issue 20): one worker holds 50,000 streams; two workers on
# this machine 100,000 (ours only). Each needs RLIMIT_NOFILE above N / workers.
BIG_LEVEL_1W = 50000
BIG_LEVEL_2W = 100000
# The levels run again (ours, nchan, one worker) for the median of the targets.
REPEAT_LEVELS = [5000, 10000]
# The level of the idle-heartbeat measurement when the ramp goes beyond it.
IDLE_LEVEL = 10000


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def level_fits(n, workers):
    """None if one process per worker can hold its share of n streams, else why not."""
    need = math.ceil(n / workers) + FD_MARGIN
    if need <= fd_limit():
        return None
    return (
        f"skipped: needs {need:,} descriptors per process, RLIMIT_NOFILE hard limit is {fd_limit():,}"
        " and cannot be raised here (no CAP_SYS_RESOURCE)"
    )


def taskset(cpus: str | None, cmd: list[str]) -> list[str]:
    if cpus and shutil.which("taskset"):
        return ["taskset", "-c", cpus, *cmd]
    return cmd


def start(cmd, *, cwd=None, env=None, log_path=None):
    """Start a process in its own process group (so it and its children can be
    stopped together, by that group id only)."""
    if not log_path:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=procfs.raise_nofile,
        )
    with open(log_path, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=procfs.raise_nofile,
        )


def stop(proc, grace=8.0):
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def wait_http(port, proc, timeout=60.0, path="/"):
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=2) as s:
                s.sendall(f"GET {path} HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode())
                if s.recv(12).startswith(b"HTTP/"):
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


# --------------------------------------------------------------------------
# Systems
# --------------------------------------------------------------------------


def uvicorn_cmd(uvicorn, app, port, workers, lifespan, app_dir=None):
    """The uvicorn command line shared by the three Python systems."""
    cmd = [uvicorn, app, *(["--app-dir", app_dir] if app_dir else [])]
    cmd += ["--lifespan", lifespan, "--loop", "uvloop", "--http", "httptools", "--host", HOST, "--port", str(port)]
    cmd += ["--no-access-log", "--timeout-graceful-shutdown", "3"]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    return cmd


class System:
    name = ""
    label = ""
    ready_path = "/"

    def __init__(self, ctx):
        self.ctx = ctx
        self.proc = None
        self.port = 0
        self.prefix = ""

    def available(self) -> str | None:
        """None if it can run, else why not."""
        return None

    def server_cmd(self, workers):
        raise NotImplementedError

    def publisher(self):
        raise NotImplementedError

    def env(self):
        e = dict(os.environ)
        e.update(
            {
                "REDIS_URL": self.ctx.redis_url,
                "EVENTS_PREFIX": self.prefix,
                "EVENTS_HEARTBEAT": str(HEARTBEAT),
                "PYTHONUNBUFFERED": "1",
                # long enough that slowly registered polls do not time out before the publish
                "EVENTS_LONGPOLL_TIMEOUT": "120",
            }
        )
        return e

    def start(self, workers, cpus):
        self.port = free_port()
        self.prefix = f"bench{os.getpid()}-{self.name}-{workers}w-{int(time.time())}"
        cmd, cwd = self.server_cmd(workers)
        log_path = os.path.join(self.ctx.raw, f"server-{self.name}-{workers}w.log")
        self.proc = start(taskset(cpus, cmd), cwd=cwd, env=self.env(), log_path=log_path)
        if not wait_http(self.port, self.proc, path=self.ready_path):
            self.stop()
            with open(log_path, errors="replace") as f:
                tail = f.read()[-1500:]
            raise RuntimeError(f"{self.name} did not start; log tail:\n{tail}")
        time.sleep(0.5 if workers == 1 else 1.5)
        return self.proc.pid

    def stop(self):
        stop(self.proc)
        self.proc = None


class Ours(System):
    name, label = "ours", "ours (events app)"
    ready_path = "/events/health/"

    def available(self):
        if not os.path.exists(os.path.join(ROOT, "events", "__init__.py")):
            return "events/ does not exist yet"
        if not os.path.exists(os.path.join(ROOT, "project", "asgi.py")):
            return "project/asgi.py does not exist yet"
        return None

    def server_cmd(self, workers):
        cmd = uvicorn_cmd(
            os.path.join(ROOT, ".venv", "bin", "uvicorn"), "project.asgi:application", self.port, workers, "on"
        )
        return cmd, ROOT

    def env(self):
        e = super().env()
        e["DJANGO_SETTINGS_MODULE"] = "project.settings"
        # The default (20,000 per worker) is below the big levels.
        e["EVENTS_MAX_STREAMS"] = str(BIG_LEVEL_2W)
        # Warnings and errors only, as nginx is run for nchan (access_log off,
        # error_log warn) and uvicorn here (--no-access-log): the demo's
        # INFO line per stream opened and closed costs about a fifth of the
        # set-up CPU (a formatted line written to stderr per stream).
        e["EVENTS_LOG_LEVEL"] = "WARNING"
        return e

    def publisher(self):
        return (
            [
                MAIN_PY,
                os.path.join(BENCH, "publisher.py"),
                "--system",
                "ours",
                "--project-dir",
                ROOT,
                "--size",
                str(self.ctx.size),
            ],
            {
                "REDIS_URL": self.ctx.redis_url,
                "EVENTS_PREFIX": self.prefix,
                "DJANGO_SETTINGS_MODULE": "project.settings",
            },
            ROOT,
        )


class OursCluster(Ours):
    """Ours on a private 3-shard Redis Cluster (redis+cluster://), started by run.py."""

    name, label = "ours-cluster", "ours on a 3-shard Redis Cluster"

    def available(self):
        if not getattr(self.ctx, "cluster_url", None):
            return getattr(self.ctx, "cluster_error", "no Redis Cluster")
        return super().available()

    def env(self):
        e = super().env()
        e["REDIS_URL"] = self.ctx.cluster_url
        return e

    def publisher(self):
        cmd, env, cwd = super().publisher()
        return cmd, {**env, "REDIS_URL": self.ctx.cluster_url}, cwd


class Naive(System):
    name, label = "naive", "naive Django (1 Redis conn/client)"

    def server_cmd(self, workers):
        cmd = uvicorn_cmd(
            os.path.join(ROOT, ".venv", "bin", "uvicorn"),
            "naive_project.asgi:application",
            self.port,
            workers,
            "off",
            app_dir=os.path.join(BENCH, "baselines", "naive"),
        )
        return cmd, ROOT

    def publisher(self):
        return (
            [
                MAIN_PY,
                os.path.join(BENCH, "publisher.py"),
                "--system",
                "naive",
                "--redis-url",
                self.ctx.redis_url,
                "--prefix",
                self.prefix,
                "--size",
                str(self.ctx.size),
            ],
            {},
            ROOT,
        )


class EventStream(System):
    name, label = "eventstream", "django-eventstream (Redis)"

    def available(self):
        if not os.path.exists(ES_PY):
            return f"{ES_VENV} missing (run without --no-install)"
        return None

    def server_cmd(self, workers):
        cmd = uvicorn_cmd(
            os.path.join(ES_VENV, "bin", "uvicorn"),
            "es_project.asgi:application",
            self.port,
            workers,
            "off",
            app_dir=os.path.join(BENCH, "baselines", "eventstream"),
        )
        return cmd, ROOT

    def publisher(self):
        return (
            [
                ES_PY,
                os.path.join(BENCH, "publisher.py"),
                "--system",
                "eventstream",
                "--project-dir",
                os.path.join(BENCH, "baselines", "eventstream"),
                "--size",
                str(self.ctx.size),
            ],
            {"REDIS_URL": self.ctx.redis_url, "DJANGO_SETTINGS_MODULE": "es_project.settings"},
            ROOT,
        )


class Nchan(System):
    name, label = "nchan", "nginx + nchan (C reference)"

    def available(self):
        if not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"):
            return "nginx not installed (apt-get install nginx libnginx-mod-nchan)"
        if not os.path.exists(NCHAN_MODULE):
            return "libnginx-mod-nchan not installed (apt-get install libnginx-mod-nchan)"
        return None

    def server_cmd(self, workers):
        self.dir = tempfile.mkdtemp(prefix="bench-nchan-")
        os.makedirs(os.path.join(self.dir, "tmp"))
        with open(os.path.join(BENCH, "baselines", "nchan", "nginx.conf.template")) as f:
            tpl = f.read()
        conf = (
            tpl.replace("{module_path}", NCHAN_MODULE)
            .replace("{workers}", str(workers))
            .replace("{prefix}", self.dir)
            .replace("{port}", str(self.port))
            .replace("{heartbeat}", str(HEARTBEAT))
        )
        # worker_rlimit_nofile cannot exceed this process' hard limit on some machines
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        conf = conf.replace("worker_rlimit_nofile 200000;", f"worker_rlimit_nofile {hard};")
        with open(os.path.join(self.dir, "nginx.conf"), "w") as f:
            f.write(conf)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        return [nginx, "-p", self.dir, "-c", os.path.join(self.dir, "nginx.conf")], self.dir

    def stop(self):
        super().stop()
        if getattr(self, "dir", None):
            shutil.rmtree(self.dir, ignore_errors=True)

    def publisher(self):
        return (
            [
                MAIN_PY,
                os.path.join(BENCH, "publisher.py"),
                "--system",
                "nchan",
                "--port",
                str(self.port),
                "--size",
                str(self.ctx.size),
            ],
            {},
            ROOT,
        )


CLASSES = {"ours": Ours, "ours-cluster": OursCluster, "naive": Naive, "eventstream": EventStream, "nchan": Nchan}


# --------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------


class Ctx:
    pass


def ensure_eventstream_venv(no_install):
    if os.path.exists(ES_PY) or no_install:
        return
    log("creating", ES_VENV, "(django-eventstream baseline)")
    subprocess.run([sys.executable, "-m", "venv", ES_VENV], check=True)
    subprocess.run(
        [ES_PY, "-m", "pip", "install", "-q", "-r", os.path.join(BENCH, "requirements-eventstream.txt")], check=True
    )


def start_redis(ctx, cpus):
    port = free_port()
    ctx.redis_proc = start(
        taskset(
            cpus,
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxclients",
                "50000",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
            ],
        ),
        log_path=os.path.join(ctx.raw, "redis.log"),
    )
    t_end = time.monotonic() + 20
    while time.monotonic() < t_end:
        try:
            with socket.create_connection((HOST, port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(7).startswith(b"+PONG"):
                    break
        except OSError:
            time.sleep(0.1)
    else:
        raise RuntimeError("redis-server did not start")
    ctx.redis_url = f"redis://{HOST}:{port}/0"
    ctx.redis_port = port
    ctx.redis_pid = ctx.redis_proc.pid


def start_cluster(ctx, cpus, primaries=3):
    """A private Redis Cluster of ``primaries`` primaries (no replicas) for `ours-cluster`."""
    sys.path.insert(0, ROOT)
    from tests.servers import start_redis_cluster

    ctx.cluster = start_redis_cluster(primaries=primaries, replicas=0)
    ctx.cluster_url = ctx.cluster.url
    if cpus and shutil.which("taskset"):
        for node in ctx.cluster.nodes:
            subprocess.run(["taskset", "-pc", cpus, str(node.process.pid)], capture_output=True)
    log("Redis Cluster up:", ctx.cluster_url)


def redis_pid_of(url):
    """pid of a local Redis (INFO server), to report its CPU."""
    try:
        import redis

        r = redis.Redis.from_url(url)
        info = r.info("server")
        r.close()
        return int(info.get("process_id", 0)), int(info.get("tcp_port", 0))
    except Exception:
        return 0, 0


# Loader source addresses: 127.0.0.2 to 127.0.0.249, SOURCE_SPAN of them per
# run (enough for the shards of the largest level), rotating.
SOURCE_FIRST, SOURCE_LAST, SOURCE_SPAN = 2, 249, 8


def next_source_base(ctx):
    """The first source address of the next loader run (127.0.0.<base>)."""
    base = getattr(ctx, "source_base", SOURCE_FIRST)
    following = base + SOURCE_SPAN
    # Back to the first when the following run's span would pass the last address.
    ctx.source_base = following if following + SOURCE_SPAN - 1 <= SOURCE_LAST else SOURCE_FIRST
    return base


def run_loadgen(ctx, system, workers, mode, levels, server_pid, on_line=None, budget=None):
    """Run the loader; ``budget``: seconds of ramp (default ``ctx.run_budget``; more for the big levels)."""
    budget = budget or ctx.run_budget
    out = os.path.join(ctx.raw, f"{system.name}-{workers}w-{mode}.json")
    cmd, env, cwd = system.publisher()
    args = [
        MAIN_PY,
        os.path.join(BENCH, "loadgen.py"),
        "--system",
        system.name,
        "--port",
        str(system.port),
        "--server-pid",
        str(server_pid),
        "--mode",
        mode,
        "--levels",
        ",".join(map(str, levels)),
        "--publishes",
        str(ctx.publishes),
        "--rate",
        str(ctx.rate),
        "--budget",
        str(budget),
        # Redis CPU and connections are read from the single-node Redis only.
        "--redis-port",
        str(ctx.redis_port if system.name not in ("nchan", "ours-cluster") else 0),
        "--redis-pid",
        str(ctx.redis_pid if system.name not in ("nchan", "ours-cluster") else 0),
        "--publisher-cmd",
        json.dumps(cmd),
        "--publisher-env",
        json.dumps(env),
        "--publisher-cwd",
        cwd,
        "--out",
        out,
    ]
    if system.name in ("ours", "ours-cluster") and workers == 1:
        args += ["--health-path", "/events/health/"]
    # Each run connects from source addresses of its own (see loadgen.py).
    args += ["--source-base", str(next_source_base(ctx))]
    if mode == "poll":
        args += ["--poll-rounds", str(ctx.poll_rounds)]
    elif workers == 1 and ctx.idle_seconds > 0:
        # Idle streams: one heartbeat interval at the largest level (N=10,000 in the standard suite).
        args += ["--idle-seconds", str(ctx.idle_seconds)]
        if IDLE_LEVEL in levels and max(levels) > IDLE_LEVEL:
            args += ["--idle-at", str(IDLE_LEVEL)]  # not at the big level: the target is stated at 10,000
    t_limit = ctx.scenario_timeout + (budget - ctx.run_budget)
    p = subprocess.Popen(
        taskset(ctx.loader_cpus, args),
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=procfs.raise_nofile,
    )
    timer = threading.Timer(t_limit, lambda: os.killpg(p.pid, signal.SIGKILL))
    timer.start()
    try:
        for line in p.stderr:
            sys.stderr.write(line)
            if on_line:
                on_line(line)
        p.wait()
    finally:
        timer.cancel()
    if p.returncode != 0 or not os.path.exists(out):
        return {"error": f"loadgen exited {p.returncode}"}
    with open(out) as f:
        return json.load(f)


def run_system(ctx, name, workers, mode, levels, budget=None):
    sysobj = CLASSES[name](ctx)
    why = sysobj.available()
    rec = {"system": name, "label": sysobj.label, "workers": workers, "mode": mode}
    if why:
        rec["skipped"] = why
        log(f"skip {name}: {why}")
        return rec
    cpus = ctx.server_cpus if workers == 1 else ctx.all_cpus
    t0 = time.monotonic()
    try:
        pid = sysobj.start(workers, cpus)
        log(f"{name} {workers}w up on port {sysobj.port} (pid {pid}, cpus {cpus})")
        res = run_loadgen(ctx, sysobj, workers, mode, levels, pid, budget=budget)
        rec.update(res)
    except Exception as e:
        rec["error"] = str(e)
        log(f"{name} {workers}w {mode}: ERROR {e}")
    finally:
        sysobj.stop()
    rec["wall_s"] = round(time.monotonic() - t0, 1)
    return rec


def git_state():
    """Last commit that touched the code under test (events/, project/), and
    whether the work tree differs from it."""
    try:
        head = subprocess.run(
            ["git", "-C", ROOT, "log", "-1", "--format=%h", "--", "events", "project"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "--", "events", "project"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (head or "?") + (" + uncommitted changes in events/ or project/" if dirty else "")


def versions(ctx):
    def pip_version(py, pkg):
        if not os.path.exists(py):
            return "not installed"
        p = subprocess.run(
            [py, "-c", f"import importlib.metadata as m; print(m.version('{pkg}'))"], capture_output=True, text=True
        )
        return p.stdout.strip() or "not installed"

    nchan = "not installed"
    p = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libnginx-mod-nchan"], capture_output=True, text=True)
    if p.returncode == 0 and p.stdout:
        nchan = p.stdout
    return {
        "ours (git)": git_state(),
        "Django": pip_version(MAIN_PY, "django"),
        "uvicorn": pip_version(MAIN_PY, "uvicorn"),
        "uvloop": pip_version(MAIN_PY, "uvloop"),
        "redis-py": pip_version(MAIN_PY, "redis"),
        "django-eventstream": pip_version(ES_PY, "django-eventstream"),
        "redis-server": procfs.cmd_version(["redis-server", "--version"], r"v=([\d.]+)").lstrip("v="),
        "nginx": procfs.cmd_version(["nginx", "-v"], r"nginx/[\d.]+").split("/")[-1],
        "nchan (Debian)": nchan,
    }


def profile_ours(ctx, n):
    """py-spy record of our worker (1) while N streams are set up and (2) while
    it fans out; each recording runs exactly for that phase of the loader."""
    pyspy = os.path.join(ROOT, ".venv", "bin", "py-spy")
    if not os.path.exists(pyspy):
        log("py-spy missing: .venv/bin/pip install -r bench/requirements.txt")
        return None
    sysobj = Ours(ctx)
    why = sysobj.available()
    if why:
        log("skip profile:", why)
        return None
    ctx.publishes = max(ctx.publishes, 30)
    pid = sysobj.start(1, ctx.server_cpus)
    phases = {"setup": ("opening", "setup {"), "fanout": ("publish phase", "publish phase N=")}
    running = {}
    paths = {}

    def spy(phase, fmt, suffix):
        path = os.path.join(ctx.raw if fmt == "raw" else ctx.results, f"profile-ours-{phase}.{suffix}")
        paths[(phase, fmt)] = path
        return subprocess.Popen(
            [pyspy, "record", "--nonblocking", "-r", "250", "-p", str(pid), "-f", fmt, "-o", path],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def on_line(line):
        for phase, (begin, end) in phases.items():
            if phase not in running and begin in line and not (phase == "setup" and "(to 10 " in line):
                if phase == "fanout" and not line.rstrip().endswith("start"):
                    continue
                running[phase] = [spy(phase, "raw", "txt"), spy(phase, "flamegraph", "svg")]
            elif phase in running and end in line and (phase != "fanout" or line.rstrip().endswith("end")):
                for p in running[phase]:
                    if p.poll() is None:
                        p.send_signal(signal.SIGINT)
                phases[phase] = ("\0never", "\0never")

    try:
        res = run_loadgen(ctx, sysobj, 1, "sse", [n], pid, on_line=on_line)
    finally:
        for procs in running.values():
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
        sysobj.stop()
    out = {"n": n, "result": res, "phases": {}}
    for phase in ("setup", "fanout"):
        raw = paths.get((phase, "raw"))
        out["phases"][phase] = {
            "summary": report.summarize_pyspy(raw) if raw and os.path.exists(raw) else None,
            "svg": os.path.basename(paths.get((phase, "flamegraph"), "")),
        }
    with open(os.path.join(ctx.raw, "profile.json"), "w") as f:
        json.dump(out, f, indent=1)
    with open(os.path.join(ctx.results, "PROFILE.md"), "w") as f:
        f.write(report.profile_markdown(out))
    log("profile written to", os.path.join(ctx.results, "PROFILE.md"))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: small N, few publishes")
    ap.add_argument("--profile", action="store_true", help="only: py-spy profile of our server")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--levels", help="override stream counts, e.g. 1000,5000")
    ap.add_argument("--workers", default="1,2", help="worker counts to run, e.g. 1 or 1,2")
    ap.add_argument("--poll-n", type=int, help="long-poll waiting clients (default 5000, quick 500)")
    ap.add_argument("--no-poll", action="store_true")
    ap.add_argument("--poll-rounds", type=int, help="long-poll rounds of answer and re-arm (default 10, quick 3)")
    ap.add_argument(
        "--idle-seconds", type=float, help="CPU with idle streams over this long (default: one heartbeat, 15 s; 0: off)"
    )
    ap.add_argument("--publishes", type=int, help="publishes per level (default 10, quick 5)")
    ap.add_argument("--rate", type=float, default=5000, help="connection attempts/s offered")
    ap.add_argument("--size", type=int, default=100, help="payload bytes")
    ap.add_argument("--redis-url", help="use this Redis instead of a private redis-server")
    ap.add_argument("--no-install", action="store_true", help="do not create the eventstream venv")
    ap.add_argument(
        "--repeat",
        type=int,
        help="runs of ours and nchan (one worker, N = 5,000 and 10,000) whose median the targets use "
        "(default 3 in the standard suite, else 1); the runs after the first alternate ours, nchan",
    )
    ap.add_argument("--results", default=os.path.join(BENCH, "results"))
    args = ap.parse_args()

    procfs.raise_nofile()
    ctx = Ctx()
    ctx.results = args.results
    ctx.raw = os.path.join(args.results, "raw")
    os.makedirs(ctx.raw, exist_ok=True)
    ncpu = os.cpu_count() or 1
    ctx.server_cpus = "0"
    ctx.loader_cpus = "1" if ncpu > 1 else "0"
    ctx.all_cpus = f"0-{ncpu - 1}"
    ctx.size = args.size
    ctx.rate = args.rate
    ctx.publishes = args.publishes or (5 if args.quick else 10)
    ctx.poll_rounds = args.poll_rounds or (3 if args.quick else 10)
    ctx.idle_seconds = HEARTBEAT if args.idle_seconds is None else args.idle_seconds
    ctx.run_budget = 60 if args.quick else 100  # seconds of ramp per system and worker count
    ctx.scenario_timeout = ctx.run_budget + 300  # hard stop for a hung loader
    machine = procfs.machine_description()
    git_at_start = git_state()

    ensure_eventstream_venv(args.no_install)
    if args.redis_url:
        ctx.redis_proc = None
        ctx.redis_url = args.redis_url
        ctx.redis_pid, ctx.redis_port = redis_pid_of(args.redis_url)
    else:
        start_redis(ctx, ctx.loader_cpus)

    if any(s in CLUSTER_SYSTEMS for s in args.systems.split(",")):
        try:
            start_cluster(ctx, ctx.loader_cpus)
        except Exception as e:  # reported as a skipped system
            ctx.cluster_error = f"Redis Cluster did not start: {e}"
            log(ctx.cluster_error)

    t_start = time.monotonic()
    try:
        if args.profile:
            profile_ours(ctx, int(args.levels or 5000))
            return 0
        systems = [s for s in args.systems.split(",") if s]
        workers = [int(w) for w in args.workers.split(",") if w]
        if any(w < 1 for w in workers):
            ap.error("--workers: counts must be >= 1")
        if args.levels:
            levels = [int(x) for x in args.levels.split(",")]
            levels2 = levels
        elif args.quick:
            levels, levels2 = [200, 1000], [1000]
        else:
            levels, levels2 = [1000, 5000, 10000], [1000, 5000, 10000]
        poll_n = args.poll_n or (500 if args.quick else 5000)
        runs = []
        standard = not args.quick and not args.levels
        for w in workers:
            for s in systems:
                lv = levels if w == 1 else levels2
                if standard and s in ("ours", "nchan") and w == 1:
                    lv = [*lv, BIG_LEVEL_1W]  # one worker, 50,000 streams (nchan at the same level)
                if standard and s in ("ours", "ours-cluster") and w > 1:
                    lv = [*lv, 20000]
                    if s == "ours":
                        lv.append(BIG_LEVEL_2W)  # two workers, 100,000 streams on this machine
                # Levels one process per worker cannot hold here are rows with the reason.
                unfit = [(n, level_fits(n, w)) for n in lv if level_fits(n, w)]
                lv = [n for n in lv if not level_fits(n, w)]
                log(f"=== {s}, {w} worker(s), SSE, N={lv}" + "".join(f"; N={n} {why}" for n, why in unfit))
                rec = run_system(ctx, s, w, "sse", lv, budget=ctx.run_budget + max(lv, default=0) / 500)
                if unfit and "skipped" not in rec:
                    rec.setdefault("levels", []).extend({"n": n, "error": why, "setup": {}} for n, why in unfit)
                runs.append(rec)
        # The targets are the median of several runs (issue 20): the first is
        # the run above; the others alternate ours and nchan, one worker.
        repeat = args.repeat or (3 if standard else 1)
        repeats = []
        for round_number in range(2, repeat + 1):
            for s in (s for s in ("ours", "nchan") if s in systems):
                log(f"=== {s}, 1 worker, SSE, N={REPEAT_LEVELS}: run {round_number} of {repeat}")
                rec = run_system(ctx, s, 1, "sse", REPEAT_LEVELS)
                rec["round"] = round_number
                repeats.append(rec)
        if not args.no_poll:
            for s in systems:
                if s == "eventstream":
                    runs.append(
                        {
                            "system": s,
                            "label": CLASSES[s].label,
                            "workers": 1,
                            "mode": "poll",
                            "skipped": "no long-poll transport",
                        }
                    )
                    continue
                log(f"=== {s}, 1 worker, long-poll, N={poll_n}")
                runs.append(run_system(ctx, s, 1, "poll", [poll_n]))
            # The long-poll target too is the median of the runs: more runs, alternating.
            for round_number in range(2, repeat + 1):
                for s in (s for s in ("ours", "nchan") if s in systems):
                    log(f"=== {s}, 1 worker, long-poll, N={poll_n}: run {round_number} of {repeat}")
                    rec = run_system(ctx, s, 1, "poll", [poll_n])
                    rec["round"] = round_number
                    repeats.append(rec)
        doc = {
            "machine": machine,
            "versions": {
                **versions(ctx),
                "ours (git)": git_at_start
                + ("" if git_state() == git_at_start else f" (changed during the run, now {git_state()})"),
            },
            "suite": "quick" if args.quick else ("custom" if args.levels else "standard"),
            "settings": {
                "payload_bytes": ctx.size,
                "publishes_per_level": ctx.publishes,
                "offered_connect_rate": ctx.rate,
                "poll_rounds": ctx.poll_rounds,
                "idle_seconds": ctx.idle_seconds,
                "server_cpus": ctx.server_cpus,
                "loader_cpus": ctx.loader_cpus,
                "two_worker_cpus": ctx.all_cpus,
                "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
                "redis": "private redis-server" if ctx.redis_proc else args.redis_url,
            },
            "runs": runs,
            "repeats": repeats,
            "repeat": repeat,
            "wall_s": round(time.monotonic() - t_start, 1),
            "loadavg_end": procfs.machine_description()["loadavg at start"],
        }
        with open(os.path.join(ctx.raw, "results.json"), "w") as f:
            json.dump(doc, f, indent=1)
        report.write_all(doc, ctx.results)
        log(f"done in {doc['wall_s']} s: {os.path.join(ctx.results, 'RESULTS.md')}")
    finally:
        stop(getattr(ctx, "redis_proc", None))
        if getattr(ctx, "cluster", None) is not None:
            ctx.cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
