#!/usr/bin/env python3
"""Overload benchmark (issue 20): a publish burst and a sustained flood against one worker.

    .venv/bin/python bench/overload.py              # 1,000 streams; burst of 500; flood 5,000/s for 20 s
    .venv/bin/python bench/overload.py --quick      # 200 streams; burst of 100; flood 1,000/s for 3 s

Starts a private redis-server and one uvicorn worker of this project pinned to
one core (taskset), opens N streams on one busy topic and one stream on
another topic (raw sockets, this process, the other core), then:

- **burst**: publish() B times in a loop on the busy topic (what a
  ``publish_changes`` on a bulk save does), one event on the other topic half
  way, and one final event after the burst;
- **flood**: publish() at R per second for S seconds on the busy topic, one
  event a second on the other topic, a final event after the flood.

Publishing runs in its own process (this script with ``--role publisher``).
Reported per scenario: the worker's **loop lag**, as seen from outside: the
time ``GET events/health/`` takes (asked every 20 ms; a health answer needs several turns of the worker's event loop, so it is
the lag a load balancer sees), its median, p99 and maximum, before and during
the scenario (the prober is a process of its own on the loader's core, so
the loader's work delays it little; on a 2-core machine the loader's core is
busy too: the "idle" column shows the floor); how late the other topic's events arrive; how long the event
after the burst or flood takes to reach every stream; publishes per second
achieved; the worker's CPU seconds and peak RSS. Results go to stdout (a
markdown table) and to ``bench/results/raw/overload.json``.

Targets (issue 20, 1,000 streams, 500-publish burst): health within 1 s
throughout, the other topic within 1 s, the event after the burst on every
stream within 3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
SCRIPT = os.path.abspath(__file__)
HOST = "127.0.0.1"


def log(*parts: object) -> None:
    print("[overload]", *parts, file=sys.stderr, flush=True)


# The publisher process ---------------------------------------------------------


def publisher(args: argparse.Namespace) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    sys.path.insert(0, ROOT)
    import django

    django.setup()
    from events import publish

    marks: dict[str, float] = {}
    started = time.monotonic()
    if args.scenario == "burst":
        for number in range(args.burst):
            publish(args.busy, data={"n": number})
            if number == args.burst // 2:
                marks["other-0"] = time.monotonic()
                publish(args.other, data="other-0")
        sent = args.burst
    else:
        interval = 1.0 / args.flood_rate
        next_at = started
        sent = 0
        next_other = started + 0.5
        end = started + args.flood_seconds
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if now >= next_other:
                mark = f"other-{len(marks)}"
                marks[mark] = time.monotonic()
                publish(args.other, data=mark)
                next_other += 1.0
            publish(args.busy, data={"n": sent})
            sent += 1
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    elapsed = time.monotonic() - started
    marks["final"] = time.monotonic()
    publish(args.busy, data="final")
    print(json.dumps({"marks": marks, "published": sent, "seconds": elapsed}), flush=True)
    return 0


# Servers -----------------------------------------------------------------------


PIN = True


def taskset(cpus: str, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if PIN and shutil.which("taskset") else cmd


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_group(cmd: list[str], env: dict[str, str] | None, log_path: str) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as out:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_group(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def health(port: int, timeout: float = 30.0) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", "/events/health/")
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


# The loader ----------------------------------------------------------------------


def probe(args: argparse.Namespace) -> int:
    """The health prober (its own process, so the loader's work does not delay it): one line per answer."""
    while True:
        started = time.monotonic()
        try:
            status, _ = health(args.port)
        except OSError:
            status = 0
        print(f"{started:.6f} {time.monotonic() - started:.6f} {status}", flush=True)
        time.sleep(0.02)


class Probe:
    """Runs the prober process; collects (started at, seconds, status) per health answer."""

    def __init__(self, port: int, cpus: str) -> None:
        self.port = port
        self.cpus = cpus
        self.samples: list[tuple[float, float, int]] = []
        self.process: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        command = [sys.executable, SCRIPT, "--role", "probe", "--port", str(self.port)]
        self.process = await asyncio.create_subprocess_exec(
            *taskset(self.cpus, command), stdout=asyncio.subprocess.PIPE
        )
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for line in self.process.stdout:
            started, seconds, status = line.split()
            self.samples.append((float(started), float(seconds), int(status)))

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()
        if self.task is not None:
            await self.task

    def times(self, start: float, end: float = float("inf")) -> list[float]:
        return [seconds for started, seconds, _ in self.samples if start <= started < end]

    @property
    def failures(self) -> int:
        return sum(1 for _, _, status in self.samples if status != 200)


class Reader:
    """One raw SSE stream; notes when each marker (``final``, ``other-<k>``) first arrives."""

    MARK = re.compile(rb'"data": "((?:final|other-\d+))"')

    def __init__(self, port: int, topic: str) -> None:
        self.port = port
        self.topic = topic
        self.seen: dict[str, float] = {}
        self.bytes = 0
        self.task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        reader, self.writer = await asyncio.open_connection(HOST, self.port)
        self.writer.write(
            f"GET /events/stream/?topic={self.topic} HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        self.task = asyncio.ensure_future(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        tail = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            self.bytes += len(chunk)
            window = tail + chunk
            now = time.monotonic()
            for match in self.MARK.finditer(window):
                self.seen.setdefault(match.group(1).decode(), now)
            tail = window[-64:]

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, OSError):
                pass
        if self.writer is not None:
            self.writer.close()


def summary(times: list[float]) -> dict[str, float]:
    if not times:
        return {}
    ordered = sorted(times)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "samples": len(ordered),
    }


async def scenario(args: argparse.Namespace, name: str, port: int, pid: int, env: dict[str, str]) -> dict[str, object]:
    busy, other = f"busy-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"
    readers = [Reader(port, busy) for _ in range(args.streams)]
    lone = Reader(port, other)
    for reader in [*readers, lone]:
        await reader.open()
    expected = args.streams + 1
    await asyncio.to_thread(wait_until, lambda: health(port)[1].get("streams") == expected, 60, "streams attached")
    probe = Probe(port, args.loader_cpus)
    await probe.start()
    idle_from = time.monotonic()
    await asyncio.sleep(1.0)  # the idle baseline
    busy_from = time.monotonic()
    cpu_before = cpu_seconds(pid)
    command = [sys.executable, SCRIPT, "--role", "publisher", "--scenario", name]
    command += ["--busy", busy, "--other", other, "--count", str(args.burst)]
    command += ["--rate", str(args.flood_rate), "--seconds", str(args.flood_seconds)]
    log(f"{name}: {args.streams} streams; publishing")
    process = await asyncio.create_subprocess_exec(
        *taskset(args.loader_cpus, command), env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    result = json.loads(out.decode().strip().splitlines()[-1])
    marks: dict[str, float] = result["marks"]

    def delivered() -> bool:
        return all("final" in r.seen for r in readers) and all(m in lone.seen for m in marks if m.startswith("other"))

    try:
        await asyncio.to_thread(wait_until, delivered, 120, "every event to arrive")
    except RuntimeError as exc:
        log(exc)  # reported as missing below
    await probe.stop()
    cpu = cpu_seconds(pid) - cpu_before
    arrivals = [r.seen["final"] for r in readers if "final" in r.seen]
    others = [lone.seen[m] - at for m, at in marks.items() if m.startswith("other") and m in lone.seen]
    record: dict[str, object] = {
        "scenario": name,
        "streams": args.streams,
        "published": result["published"],
        "publish_seconds": round(result["seconds"], 2),
        "publishes_per_s": round(result["published"] / max(result["seconds"], 1e-9)),
        "health_idle": summary(probe.times(idle_from, busy_from)),
        "health_during": summary(probe.times(busy_from)),
        "health_failures": probe.failures,
        "other_topic_ms_max": round(max(others) * 1000, 1) if others else None,
        "other_topic_missing": sum(1 for m in marks if m.startswith("other") and m not in lone.seen),
        "final_all_ms": round((max(arrivals) - marks["final"]) * 1000, 1) if len(arrivals) == len(readers) else None,
        "final_missing": len(readers) - len(arrivals),
        "loader_mb_received": round(sum(r.bytes for r in readers) / 2**20, 1),
        "worker_cpu_s": round(cpu, 2),
        "worker_peak_rss_mb": round(peak_rss_mb(pid), 1),
    }
    for reader in [*readers, lone]:
        await reader.close()
    return record


def table(records: list[dict[str, object]]) -> str:
    lines = [
        "| scenario | streams | publishes (per s) | health idle p50 | health during p50 / p99 / max "
        "| other topic, max | event after, all streams | worker CPU s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        idle, during = r["health_idle"], r["health_during"]
        assert isinstance(idle, dict) and isinstance(during, dict)
        lines.append(
            f"| {r['scenario']} | {r['streams']} | {r['published']} ({r['publishes_per_s']}/s) "
            f"| {idle.get('median_ms')} ms | {during.get('median_ms')} / {during.get('p99_ms')} / "
            f"{during.get('max_ms')} ms | {r['other_topic_ms_max']} ms | {r['final_all_ms']} ms "
            f"| {r['worker_cpu_s']} | {r['worker_peak_rss_mb']} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--role", default="loader", choices=["loader", "publisher", "probe"])
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of both scenarios")
    ap.add_argument("--scenarios", default="burst,flood")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the worker and the loader to cores")
    ap.add_argument("--streams", type=int)
    ap.add_argument("--burst", "--count", dest="burst", type=int, help="publishes in the burst (500)")
    ap.add_argument("--flood-rate", "--rate", dest="flood_rate", type=float, help="publishes/s of the flood (5000)")
    ap.add_argument("--flood-seconds", "--seconds", dest="flood_seconds", type=float, help="flood length (20 s)")
    ap.add_argument("--scenario", help=argparse.SUPPRESS)
    ap.add_argument("--busy", help=argparse.SUPPRESS)
    ap.add_argument("--other", help=argparse.SUPPRESS)
    ap.add_argument("--results", default=os.path.join(BENCH, "results", "raw"))
    args = ap.parse_args()
    if args.role == "publisher":
        return publisher(args)
    if args.role == "probe":
        return probe(args)
    args.streams = args.streams or (200 if args.quick else 1000)
    args.burst = args.burst or (100 if args.quick else 500)
    args.flood_rate = args.flood_rate or (1000 if args.quick else 5000)
    args.flood_seconds = args.flood_seconds or (3 if args.quick else 20)
    ncpu = os.cpu_count() or 1
    server_cpus, args.loader_cpus = "0", ("1" if ncpu > 1 else "0")
    global PIN
    PIN = not args.no_pin
    if PIN and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(args.loader_cpus)})  # the loader itself, off the worker's core
    os.makedirs(args.results, exist_ok=True)
    logs = tempfile.mkdtemp(prefix="overload-")
    redis_port, port = free_port(), free_port()
    redis_proc = start_group(
        taskset(args.loader_cpus, ["redis-server", "--port", str(redis_port), "--bind", HOST, "--save", ""]),
        None,
        os.path.join(logs, "redis.log"),
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "REDIS_URL": f"redis://{HOST}:{redis_port}/0",
        "EVENTS_PREFIX": f"overload-{uuid.uuid4().hex[:6]}",
        "PYTHONUNBUFFERED": "1",
    }
    server = None
    records: list[dict[str, object]] = []
    try:
        server = start_group(
            taskset(
                server_cpus,
                [sys.executable, "-m", "uvicorn", "project.asgi:application", "--host", HOST, "--port", str(port),
                 "--lifespan", "on", "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                 "--timeout-graceful-shutdown", "3"],
            ),
            env,
            os.path.join(logs, "server.log"),
        )  # fmt: skip
        wait_until(lambda: health(port, 2)[0] == 200, 60, "the worker")
        for name in [s for s in args.scenarios.split(",") if s]:
            record = asyncio.run(scenario(args, name, port, server.pid, env))
            log(json.dumps(record))
            records.append(record)
    finally:
        stop_group(server)
        stop_group(redis_proc)
    with open(os.path.join(args.results, "overload.json"), "w") as f:
        json.dump({"quick": args.quick, "records": records}, f, indent=1)
    print(table(records))
    shutil.rmtree(logs, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
