#!/usr/bin/env python3
"""Capacity calculator: how many workers, hosts and Redis shards, and what latency.

    python bench/capacity.py --streams 100000 --publishes 50 --fanout 2000
    python bench/capacity.py -N 100000 -R 50 -F 2000 --cores-per-host 8 --ram-per-host-gb 16

Inputs: N open streams, R publishes per second, F average subscribers per
publish (streams that receive each event). The model and where each
constant was measured are in docs/capacity.md; the constants below come from
``bench/run.py --systems ours,ours-cluster`` (bench/results/cluster/RESULTS.md)
and ``bench/redis_capacity.py`` (bench/results/capacity*.json) on a 2-core
machine, and can be overridden to match your own runs. Every answer says
whether it lies inside the measured range or is extrapolated.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Measured:
    # Worker (one uvicorn process, one core), bench/results/RESULTS.md (standard run), N = 10,000.
    us_per_delivery: float = 7.0  # server CPU per delivered message (5.9 single node, 6.6 cluster; 7.5 at N = 1,000)
    kb_per_stream: float = 12.0  # RSS per idle stream (11.5 / 11.8 KB)
    worker_base_mb: float = 60.0  # RSS of a worker with no stream
    streams_per_worker_measured: int = 10_000  # largest N one worker served without failure here
    deliveries_per_s_per_worker: float = 167_300  # msgs/s during a fan-out at N = 10,000 (single node)
    fanout_base_ms: float = 2.0  # first-client latency at small N
    # bench/worker_publish_cost.py: a worker receiving one publish and delivering it once.
    us_per_publish_received: float = 45.0  # single Redis (44-45 µs measured at 2,000/s)
    us_per_publish_received_cluster: float = 70.0  # Redis Cluster (58-71 µs measured)
    # Redis (bench/redis_capacity.py): CPU per publish of the publish script
    # with a few subscribed hubs, and what one node sustained with its
    # median latency under 5 ms on this machine.
    redis_us_per_publish: float = 4.0  # 3.8 µs measured with 2 hubs, 4.4 µs with 8
    redis_us_per_hub: float = 0.1  # each extra subscribed worker connection a publish is delivered to
    redis_publishes_per_s_measured: int = 64_000  # sustained by one node, 8 hubs subscribed (511k msgs/s)


def hubs_per_publish(workers: int, fanout: float) -> float:
    """Expected number of workers with at least one of a publish's F subscribers (spread at random)."""
    if workers <= 1:
        return 1.0
    return workers * (1 - (1 - 1 / workers) ** fanout)


@dataclass
class Answer:
    workers: int
    workers_for_streams: int
    workers_for_cpu: int
    hosts: int
    redis_shards: int
    hubs_per_publish: float
    redis_messages_per_s: float
    redis_cpu_per_shard: float
    worker_cpu: float
    latency_median_ms: float
    latency_last_ms: float
    ram_per_host_gb: float
    notes: list[str]


def plan(
    streams: int,
    publishes: float,
    fanout: float,
    *,
    cores_per_host: int = 4,
    ram_per_host_gb: float = 16.0,
    streams_per_worker: int = 10_000,
    worker_cpu_target: float = 0.6,
    redis_cpu_target: float = 0.5,
    cluster: bool = False,
    m: Measured | None = None,
) -> Answer:
    m = m or Measured()
    notes: list[str] = []
    fanout = min(fanout, streams)
    deliveries = publishes * fanout
    per_publish = m.us_per_publish_received_cluster if cluster else m.us_per_publish_received

    def worker_cpu(workers: int) -> float:
        """Share of a core each of ``workers`` workers is busy."""
        received = publishes * hubs_per_publish(workers, fanout) / workers
        return (deliveries / workers * m.us_per_delivery + received * per_publish) / 1e6

    for_streams = math.ceil(streams / streams_per_worker)
    for_cpu = 1
    while worker_cpu(for_cpu) > worker_cpu_target and for_cpu < 1_000_000:
        for_cpu = for_cpu * 2 if worker_cpu(for_cpu * 2) > worker_cpu_target else for_cpu + 1
    if worker_cpu(for_cpu) > worker_cpu_target:
        notes.append("every publish reaches every worker: more workers do not help")
    workers = max(1, for_streams, for_cpu)
    # RAM may need more hosts than cores do.
    per_worker_gb = (m.worker_base_mb + streams / workers * m.kb_per_stream / 1024) / 1024
    workers_per_host = max(1, min(cores_per_host, int(ram_per_host_gb * 0.8 // per_worker_gb)))
    hosts = math.ceil(workers / workers_per_host)
    hubs = hubs_per_publish(workers, fanout)
    redis_messages = publishes * hubs
    redis_cpu = publishes * (m.redis_us_per_publish + m.redis_us_per_hub * hubs) / 1e6
    shards = max(1, math.ceil(redis_cpu / redis_cpu_target))
    per_worker_fanout = fanout / workers
    utilisation = worker_cpu(workers)
    # One worker writes a publish to its subscribers one after another; the
    # median subscriber waits for half of them. Queueing when busy: 1/(1-u).
    queueing = 1 / max(0.05, 1 - utilisation)
    last_ms = (m.fanout_base_ms + per_worker_fanout * m.us_per_delivery / 1000) * queueing
    median_ms = (m.fanout_base_ms + per_worker_fanout * m.us_per_delivery / 2000) * queueing

    if streams / workers > m.streams_per_worker_measured:
        notes.append(
            f"{streams / workers:,.0f} streams per worker: above the {m.streams_per_worker_measured:,} measured"
        )
    if deliveries / workers > m.deliveries_per_s_per_worker * worker_cpu_target:
        notes.append("deliveries per worker above the measured sustained rate")
    if publishes / shards > m.redis_publishes_per_s_measured:
        notes.append(
            f"{publishes / shards:,.0f} publishes/s per Redis shard: above the {m.redis_publishes_per_s_measured:,} measured"
        )
    if cluster or shards > 1:
        per_publish_note = "the worker's per-publish cost is the cluster's (70 µs)"
        if not cluster:
            notes.append(f"{shards} Redis shards needed: run with --cluster for the cluster's worker costs")
        else:
            notes.append(per_publish_note)
    if shards > 1:
        notes.append(
            f"{shards} Redis shards: per-shard cost measured, the sum over shards is extrapolated "
            "(sharded pub/sub has no cross-shard traffic; on the 2-core bench machine 3 shards shared one core)"
        )
    if fanout < 100:
        notes.append(
            "small fan-out: the per-publish cost of a worker (not the per-delivery cost) dominates; extrapolated"
        )
    if not notes:
        notes.append("inside the measured range")
    return Answer(
        workers=workers,
        workers_for_streams=for_streams,
        workers_for_cpu=for_cpu,
        hosts=hosts,
        redis_shards=shards,
        hubs_per_publish=hubs,
        redis_messages_per_s=redis_messages,
        redis_cpu_per_shard=redis_cpu / shards,
        worker_cpu=utilisation,
        latency_median_ms=median_ms,
        latency_last_ms=last_ms,
        ram_per_host_gb=per_worker_gb * min(workers, workers_per_host),
        notes=notes,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-N", "--streams", type=int, required=True, help="open streams (all hosts)")
    ap.add_argument("-R", "--publishes", type=float, required=True, help="publishes per second (all topics)")
    ap.add_argument("-F", "--fanout", type=float, required=True, help="average subscribers per publish")
    ap.add_argument("--cores-per-host", type=int, default=4, help="one worker per core")
    ap.add_argument("--ram-per-host-gb", type=float, default=16.0)
    ap.add_argument("--streams-per-worker", type=int, default=10_000, help="planned ceiling (measured: 10,000)")
    ap.add_argument("--worker-cpu-target", type=float, default=0.6, help="busiest share of a core to plan for")
    ap.add_argument("--redis-cpu-target", type=float, default=0.5, help="busiest share of a Redis core")
    ap.add_argument("--cluster", action="store_true", help="workers on a Redis Cluster (higher per-publish cost)")
    ap.add_argument("--us-per-delivery", type=float, default=Measured.us_per_delivery)
    ap.add_argument("--redis-us-per-publish", type=float, default=Measured.redis_us_per_publish)
    args = ap.parse_args(argv)
    if min(args.streams, args.publishes, args.fanout) <= 0:
        ap.error("N, R and F must be positive")
    measured = Measured(us_per_delivery=args.us_per_delivery, redis_us_per_publish=args.redis_us_per_publish)
    a = plan(
        args.streams,
        args.publishes,
        args.fanout,
        cores_per_host=args.cores_per_host,
        ram_per_host_gb=args.ram_per_host_gb,
        streams_per_worker=args.streams_per_worker,
        worker_cpu_target=args.worker_cpu_target,
        redis_cpu_target=args.redis_cpu_target,
        cluster=args.cluster,
        m=measured,
    )
    deliveries = args.publishes * min(args.fanout, args.streams)
    print(
        f"N = {args.streams:,} streams, R = {args.publishes:,g} publishes/s, F = {args.fanout:,g} subscribers/publish"
    )
    print(f"  deliveries              {deliveries:,.0f} /s")
    print(
        f"  workers                 {a.workers}  (for streams: {a.workers_for_streams}, for CPU: {a.workers_for_cpu})"
    )
    print(f"  worker CPU              {a.worker_cpu:.0%} of a core each")
    print(
        f"  hosts                   {a.hosts}  ({args.cores_per_host} cores, ~{a.ram_per_host_gb:.1f} GB RAM used per host)"
    )
    print(
        f"  Redis                   {'single node' if a.redis_shards == 1 else f'cluster of {a.redis_shards} shards'}"
    )
    print(f"    hubs per publish      {a.hubs_per_publish:,.1f}  (Redis messages {a.redis_messages_per_s:,.0f} /s)")
    print(f"    CPU per shard         {a.redis_cpu_per_shard:.0%} of a core")
    print(
        f"  latency publish->client median {a.latency_median_ms:,.0f} ms, last subscriber {a.latency_last_ms:,.0f} ms"
    )
    for note in a.notes:
        print(f"  note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
