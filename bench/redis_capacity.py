#!/usr/bin/env python3
"""How many event messages per second one Redis node (or a cluster) sustains for this workload.

    .venv/bin/python bench/redis_capacity.py                 # single node, then a 3-shard cluster
    .venv/bin/python bench/redis_capacity.py --only single   # or --only cluster
    .venv/bin/python bench/redis_capacity.py --subscribers 4 --rates 2000,4000,8000

The workload is exactly the app's: each publish runs the app's own publish
script (``XADD`` to the bounded history + ``PUBLISH``, or ``SPUBLISH`` on a
cluster, with the app's key and channel names) with a 100-byte payload, and
``--subscribers`` pub/sub connections (each standing for one worker's hub)
are subscribed to every topic, so each publish is delivered ``subscribers``
times: Redis messages/s = publishes/s x subscribers.

An open-loop publisher offers rising rates (``--rates``; default doubling from
1,000/s) for ``--seconds`` each, pipelining the commands of each millisecond;
every delivered message carries its send time, and one subscriber records the
latency (publish call to delivery). A step *saturates* when the achieved rate
falls below 90 % of the offered one or the median latency climbs above
``--max-p50-ms`` (queueing: Redis or the path to it is full); the last step
before is the sustained capacity. The median, not the 99th percentile, is
the criterion because on a shared machine scheduling stalls of other
processes make the tail noisy long before Redis is busy; the p99 is still
reported. Each step also reports Redis's own CPU per publish (from
``/proc``), from which the one-core ceiling is derived: where Redis itself
would saturate, whatever the load generator manages.

Redis runs pinned to CPU 1, the load generator to CPU 0 (on a machine with
two cores a 3-shard cluster shares CPU 1, so it shows the per-core cost, not
three cores' worth: see docs/capacity.md). Writes
``bench/results/capacity.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, ROOT)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import hiredis  # noqa: E402

PREFIX = "cap"
PAYLOAD = 100


def log(*parts: object) -> None:
    print("[capacity]", *parts, file=sys.stderr, flush=True)


def resp(*parts: bytes | str | int) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(pid: int, cpus: str) -> None:
    if shutil.which("taskset"):
        subprocess.run(["taskset", "-apc", cpus, str(pid)], capture_output=True)


@dataclass
class Layout:
    """Where each topic's publish goes: the node, the script's keys (history, newest-id index), channel and subscribe command."""

    script: str
    subscribe: bytes
    nodes: list[tuple[str, int]]
    # topic -> (node index, history key, channel)
    topics: dict[str, tuple[int, str, str, str]] = field(default_factory=dict)


def single_layout(port: int, topics: list[str]) -> Layout:
    import django

    django.setup()
    from events.backends.connection import channel_name, history_key, newest_key
    from events.backends.single import PUBLISH_SCRIPT

    layout = Layout(PUBLISH_SCRIPT, b"SUBSCRIBE", [("127.0.0.1", port)])
    for topic in topics:
        layout.topics[topic] = (0, history_key(PREFIX), newest_key(PREFIX), channel_name(topic, PREFIX))
    return layout


def cluster_layout(cluster, topics: list[str]) -> Layout:  # type: ignore[no-untyped-def]
    import django

    django.setup()
    from events.backends.cluster.layout import channel_name, group_of, group_slot, history_key, newest_key
    from events.backends.cluster.publishing import PUBLISH_SCRIPT

    primaries = cluster.primaries()
    layout = Layout(PUBLISH_SCRIPT, b"SSUBSCRIBE", [("127.0.0.1", node.port) for node in primaries])
    ranges = cluster.slots()
    for topic in topics:
        slot = group_slot(group_of(topic))
        port = next(p for start, end, p in ranges if start <= slot <= end)
        index = [node.port for node in primaries].index(port)
        group = group_of(topic)
        layout.topics[topic] = (
            index,
            history_key(group, PREFIX),
            newest_key(group, PREFIX),
            channel_name(topic, PREFIX),
        )
    return layout


class Counter:
    """A count that can be awaited to reach a value."""

    def __init__(self) -> None:
        self.value = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def add(self, n: int = 1) -> None:
        self.value += n
        for target, future in list(self._waiters):
            if self.value >= target and not future.done():
                future.set_result(None)

    async def reach(self, target: int, timeout: float) -> None:
        if self.value >= target:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters.remove((target, future))


CONFIRMED = Counter()


class Subscriber(asyncio.Protocol):
    """One pub/sub connection to one node; counts messages, and (if ``timing``) their latency."""

    def __init__(self, timing: bool) -> None:
        self.reader = hiredis.Reader()
        self.timing = timing
        self.count = 0
        self.latencies: list[int] = []

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        now = time.monotonic_ns()
        while (reply := self.reader.gets()) is not False:
            kind = reply[0]
            if kind in (b"message", b"smessage"):
                self.count += 1
                if self.timing:
                    body = reply[2]
                    start = body.index(b'"ts":') + 5
                    self.latencies.append(now - int(body[start : body.index(b",", start)]))
            elif kind in (b"subscribe", b"ssubscribe"):
                CONFIRMED.add()


class Publisher(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.replies = Counter()
        self.errors = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            self.replies.add()
            if isinstance(reply, hiredis.ReplyError):
                self.errors += 1
                if self.errors < 3:
                    log("publish error:", reply)


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def run_step(
    layout: Layout,
    subscribers: list[Subscriber],
    pubs: list[Publisher],
    sha: str,
    rate: int,
    seconds: float,
    redis_pids: list[int],
) -> dict:
    from events.backends.history import index_topics  # after django.setup() (the layout's)

    topics = list(layout.topics)
    for sub in subscribers:
        sub.count = 0
        sub.latencies = []
    for pub in pubs:
        pub.replies = Counter()
    sent = [0] * len(pubs)
    cpu_before = cpu_seconds(redis_pids)
    started = time.monotonic()
    tick = 0.001
    n = 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate)
        batches: list[list[bytes]] = [[] for _ in pubs]
        while n < due:
            topic = topics[n % len(topics)]
            node, key, index_key, channel = layout.topics[topic]
            pad = "x" * (PAYLOAD - 40)
            data = f'{{"seq":{n},"ts":{time.monotonic_ns()},"pad":"{pad}"}}'
            batches[node].append(
                resp("EVALSHA", sha, 2, key, index_key, 10000, topic, "invalidate", data, channel, index_topics(10000))
            )
            sent[node] += 1
            n += 1
        for pub, batch in zip(pubs, batches, strict=True):
            if batch:
                assert pub.transport is not None
                pub.transport.write(b"".join(batch))
        await asyncio.sleep(tick)
    offered_end = time.monotonic()
    # Let what was sent drain (bounded): what is late counts against the rate.
    await asyncio.gather(
        *(pub.replies.reach(count, offered_end + 2.0 - time.monotonic()) for pub, count in zip(pubs, sent, strict=True))
    )
    wall = time.monotonic() - started
    redis_cpu = cpu_seconds(redis_pids) - cpu_before
    replied = sum(p.replies.value for p in pubs)
    delivered = sum(s.count for s in subscribers)
    lat = sorted(x for s in subscribers if s.timing for x in s.latencies)

    def pct(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6, 2) if lat else None

    return {
        "offered_per_s": rate,
        "published_per_s": round(replied / wall),
        "redis_messages_per_s": round(delivered / wall),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": round(lat[-1] / 1e6, 2) if lat else None,
        # Redis CPU (all nodes) per publish and its share of one core: where
        # the CPU ceiling is, whatever the generator manages.
        "redis_cpu_us_per_publish": round(redis_cpu / max(replied, 1) * 1e6, 1),
        "redis_cpu_percent": round(100 * redis_cpu / wall, 1),
    }


async def measure(layout: Layout, args: argparse.Namespace, redis_pids: list[int]) -> list[dict]:
    loop = asyncio.get_running_loop()
    sha = ""
    pubs: list[Publisher] = []
    for host, port in layout.nodes:
        _, pub = await loop.create_connection(Publisher, host, port)
        pubs.append(pub)
        assert pub.transport is not None
        pub.transport.write(resp("SCRIPT", "LOAD", layout.script))
        await pub.replies.reach(1, 10)
    import hashlib

    sha = hashlib.sha1(layout.script.encode()).hexdigest()
    subscribers: list[Subscriber] = []
    CONFIRMED.value = 0
    for i in range(args.subscribers):
        for index, (host, port) in enumerate(layout.nodes):
            transport, sub = await loop.create_connection(lambda i=i: Subscriber(timing=i == 0), host, port)
            channels = [channel for node, _, _, channel in layout.topics.values() if node == index]
            for channel in channels:  # one per command: a cluster refuses channels of several slots in one
                transport.write(resp(layout.subscribe.decode(), channel))
            subscribers.append(sub)
    expected = args.subscribers * len(layout.topics)
    await CONFIRMED.reach(expected, 30)
    steps = []
    for rate in args.rates:
        step = await run_step(layout, subscribers, pubs, sha, rate, args.seconds, redis_pids)
        saturated = step["published_per_s"] < 0.9 * rate or (step["p50_ms"] or 0) > args.max_p50_ms
        step["saturated"] = saturated
        steps.append(step)
        log(json.dumps(step))
        if saturated:
            break
        await asyncio.sleep(0.5)
    for pub in pubs:
        if pub.transport is not None:
            pub.transport.close()
    return steps


def start_single(cpus: str) -> tuple[subprocess.Popen[bytes], int, str]:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="capacity-redis-")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import redis

    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port).ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    pin(proc.pid, cpus)
    return proc, port, workdir


def summary(steps: list[dict]) -> dict:
    good = [s for s in steps if not s["saturated"]]
    best = good[-1] if good else None
    # The CPU ceiling: one core's worth of publishes at the cost measured at
    # the busiest unsaturated step (per node; a cluster divides it over shards).
    cost = best["redis_cpu_us_per_publish"] if best else None
    return {
        "redis_cpu_us_per_publish": cost,
        "cpu_ceiling_publishes_per_s_per_core": round(1e6 / cost) if cost else None,
        "sustained_publishes_per_s": best["published_per_s"] if best else None,
        "sustained_redis_messages_per_s": best["redis_messages_per_s"] if best else None,
        "p99_ms_at_sustained": best["p99_ms"] if best else None,
        "saturated_at_offered_per_s": steps[-1]["offered_per_s"] if steps and steps[-1]["saturated"] else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["single", "cluster"])
    ap.add_argument("--subscribers", type=int, default=2, help="pub/sub connections (worker hubs) per node")
    ap.add_argument("--topics", type=int, default=64)
    ap.add_argument("--rates", default="1000,2000,4000,8000,16000,32000,64000,128000")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--max-p50-ms", type=float, default=5.0)
    ap.add_argument("--out", default=os.path.join(BENCH, "results", "capacity.json"))
    args = ap.parse_args()
    args.rates = [int(r) for r in args.rates.split(",")]
    ncpu = os.cpu_count() or 1
    redis_cpus, load_cpus = ("1", "0") if ncpu > 1 else ("0", "0")
    pin(os.getpid(), load_cpus)
    topics = [f"topic{n}" for n in range(args.topics)]
    result: dict = {
        "workload": {
            "payload_bytes": PAYLOAD,
            "topics": args.topics,
            "subscribers_per_topic": args.subscribers,
            "step_seconds": args.seconds,
            "max_p50_ms": args.max_p50_ms,
            "redis_cpus": redis_cpus,
            "generator_cpus": load_cpus,
            "cpus": ncpu,
            "loadavg_at_start": os.getloadavg()[0],
        }
    }
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    if args.only in (None, "single"):
        proc, port, workdir = start_single(redis_cpus)
        try:
            log("single node on port", port)
            steps = runner(measure(single_layout(port, topics), args, [proc.pid]))
            result["single"] = {"steps": steps, **summary(steps)}
        finally:
            proc.terminate()
            proc.wait(10)
            shutil.rmtree(workdir, ignore_errors=True)
    if args.only in (None, "cluster"):
        from tests.servers import start_redis_cluster

        cluster = start_redis_cluster(primaries=3, replicas=0)
        try:
            for node in cluster.nodes:
                assert node.process is not None
                pin(node.process.pid, redis_cpus)
            log("3-shard cluster", cluster.url)
            pids = [node.process.pid for node in cluster.nodes if node.process is not None]
            steps = runner(measure(cluster_layout(cluster, topics), args, pids))
            result["cluster_3_shards"] = {"steps": steps, **summary(steps)}
        finally:
            cluster.stop()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    for name in ("single", "cluster_3_shards"):
        if name in result:
            print(name, json.dumps({k: v for k, v in result[name].items() if k != "steps"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
