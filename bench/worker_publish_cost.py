#!/usr/bin/env python3
"""A worker's CPU per publish it receives, when each publish has one subscriber on it.

    .venv/bin/python bench/worker_publish_cost.py [--rate 2000] [--seconds 5] [--topics 20] [--cluster]

``bench/run.py`` measures the cost per *delivery* at large fan-out; this
measures the other term of the capacity model (docs/capacity.md): what one
publish costs a worker whose hub is subscribed to its topic (read it from
Redis, parse it, dispatch it), with a single stream to deliver it to. One
uvicorn worker (pinned to CPU 0) serves one stream per topic; publishes at a
steady rate go straight to Redis (the app's publish script, pipelined); the
worker's CPU time over the run divided by the publishes it received is the
answer. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
sys.path.insert(0, ROOT)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import redis_capacity as cap  # noqa: E402


async def drain(reader: asyncio.StreamReader, counter: list[int]) -> None:
    while chunk := await reader.read(65536):
        counter[0] += chunk.count(b"\nevent: invalidate\n")


async def run(args: argparse.Namespace, layout: cap.Layout, port: int, worker_pid: int) -> dict:
    counter = [0]
    readers = []
    for topic in layout.topics:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /events/stream/?topic={topic} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        readers.append((asyncio.ensure_future(drain(reader, counter)), writer))
    await asyncio.sleep(2)  # streams attached (the bench is not a test: a settle delay is fine here)
    loop = asyncio.get_running_loop()
    pubs = []
    for host, node_port in layout.nodes:
        _, pub = await loop.create_connection(cap.Publisher, host, node_port)
        assert pub.transport is not None
        pub.transport.write(cap.resp("SCRIPT", "LOAD", layout.script))
        await pub.replies.reach(1, 10)
        pubs.append(pub)
    sha = hashlib.sha1(layout.script.encode()).hexdigest()
    cpu0 = cap.cpu_seconds([worker_pid])
    step = await cap.run_step(layout, [], pubs, sha, args.rate, args.seconds, [worker_pid])
    await asyncio.sleep(1)
    cpu = cap.cpu_seconds([worker_pid]) - cpu0
    for task, writer in readers:
        writer.close()
        task.cancel()
    received = counter[0]
    return {
        "rate": args.rate,
        "published": step["published_per_s"] * args.seconds,
        "delivered": received,
        "worker_cpu_s": round(cpu, 2),
        "worker_us_per_publish_with_one_delivery": round(cpu / max(received, 1) * 1e6, 1),
        "loadavg": os.getloadavg()[0],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--topics", type=int, default=20)
    ap.add_argument("--cluster", action="store_true")
    args = ap.parse_args()
    topics = [f"wtopic{n}" for n in range(args.topics)]
    cleanup = []
    try:
        if args.cluster:
            from tests.servers import start_redis_cluster

            cluster = start_redis_cluster(primaries=3, replicas=0)
            cleanup.append(cluster.stop)
            url = cluster.url
            layout = cap.cluster_layout(cluster, topics)
        else:
            proc, redis_port, workdir = cap.start_single("1")
            cleanup.append(lambda: (proc.terminate(), proc.wait(10), shutil.rmtree(workdir, ignore_errors=True)))
            url = f"redis://127.0.0.1:{redis_port}/0"
            layout = cap.single_layout(redis_port, topics)
        port = cap.free_port()
        env = {**os.environ, "REDIS_URL": url, "EVENTS_PREFIX": cap.PREFIX, "EVENTS_HEARTBEAT": "15"}
        with open(os.path.join(tempfile.gettempdir(), "worker_publish_cost.log"), "wb") as log:
            server = subprocess.Popen(
                ["taskset", "-c", "0", os.path.join(ROOT, ".venv", "bin", "uvicorn"), "project.asgi:application",
                 "--port", str(port), "--lifespan", "on", "--loop", "uvloop", "--http", "httptools", "--no-access-log"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        cleanup.append(lambda: (server.terminate(), server.wait(10)))
        deadline = time.monotonic() + 30
        import httpx

        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/events/health/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("worker did not start")
            time.sleep(0.2)
        cap.pin(os.getpid(), "1")
        result = asyncio.run(run(args, layout, port, server.pid))
        result["redis"] = "3-shard cluster" if args.cluster else "single node"
        print(json.dumps(result))
    finally:
        for step in reversed(cleanup):
            step()
    return 0


if __name__ == "__main__":
    sys.exit(main())
