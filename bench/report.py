#!/usr/bin/env python3
# ruff: noqa: RUF001  (the tables use an en dash and a multiplication sign on purpose)
"""Turns bench/results/raw/results.json into RESULTS.md and fanout.png.

.venv/bin/python bench/report.py [bench/results/raw/results.json]
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter

BENCH = os.path.dirname(os.path.abspath(__file__))

TARGETS_N = 5000  # the reference point (one worker, N=5,000, 100-byte payload)


def fmt(v, nd=1, unit=""):
    if v is None:
        return "–"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}{unit}"
        return f"{v:.{nd}f}{unit}"
    if isinstance(v, int):
        return f"{v:,}{unit}"
    return f"{v}{unit}"


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def fmt_ratio(r):
    return "–" if r is None else f"{r:.2f}×"


def levels_of(run):
    return run.get("levels") or []


def failures(level):
    """Everything that is not a clean delivery, summed."""
    s = level.get("setup", {})
    f = s.get("failed", 0)
    f += max(0, level.get("expected", 0) - level.get("delivered", 0))
    f += level.get("duplicated", 0) + sum((level.get("invalid") or {}).values())
    f += level.get("lost_streams", 0)
    return f


def index(doc):
    """(system, workers, n) -> level dict for SSE runs."""
    out = {}
    for run in doc["runs"]:
        if run.get("mode") != "sse":
            continue
        for lv in levels_of(run):
            out[(run["system"], run["workers"], lv["n"])] = lv
    return out


def rounds_of(doc, system, n):
    """The level dicts of ``system`` (one worker, SSE) at ``n``: the main run's, then each repeat's."""
    found = [index(doc).get((system, 1, n))]
    for run in doc.get("repeats") or []:
        if run["system"] == system and run.get("mode", "sse") == "sse":
            found += [lv for lv in levels_of(run) if lv["n"] == n]
    return [lv for lv in found if lv and not lv.get("error")]


def poll_rounds_of(doc, system):
    """The long-poll rounds of ``system`` (``poll_rounds`` dicts): the main run's, then each repeat's."""
    found = [poll_index(doc).get(system)]
    for run in doc.get("repeats") or []:
        if run["system"] == system and run.get("mode") == "poll":
            found += levels_of(run)[:1]
    rounds = [lv.get("poll_rounds") for lv in found if lv and not lv.get("error")]
    return [r for r in rounds if r and r.get("rounds", 0) > 1 and r.get("server_ms_per_poll") is not None]


def median(values):
    """The median of the values that are not None (None if there are none)."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def median_level(levels):
    """A level dict holding the median of each figure the targets read, over ``levels`` (None if empty)."""
    if not levels:
        return None
    return {
        "fanout_ms": median(lv.get("fanout_ms") for lv in levels),
        "server_us_per_msg": median(lv.get("server_us_per_msg") for lv in levels),
        "setup": {"rate_per_s": median(lv.get("setup", {}).get("rate_per_s") for lv in levels)},
        "rss_per_stream_kb": median(lv.get("rss_per_stream_kb") for lv in levels),
        "runs": len(levels),
    }


def repeats_section(doc):
    """Each run behind the medians of the targets: the main run, then the repeats (ours, nchan alternating)."""
    if not doc.get("repeats"):
        return []
    rows = [
        "## The runs behind the medians",
        "",
        f"The fan-out, CPU, set-up and memory targets above are the median of {doc.get('repeat', 1)} runs: "
        "the main run (the tables below) and repeats that alternate ours and nchan, one worker, "
        "each system's figure taken apart.",
        "",
        "| system | run | N | setup /s | fan-out ms (median) | server µs/msg | KB/idle stream |",
        "|---|---|---|---|---|---|---|",
    ]
    for system in ("ours", "nchan"):
        for n in (5000, 10000):
            for number, lv in enumerate(rounds_of(doc, system, n), start=1):
                rows.append(
                    f"| {system} | {number} | {n:,} | {fmt(lv.get('setup', {}).get('rate_per_s'), 0)} | "
                    f"{fmt(lv.get('fanout_ms'))} | {fmt(lv.get('server_us_per_msg'))} | "
                    f"{fmt(lv.get('rss_per_stream_kb'))} |"
                )
    polls = {system: poll_rounds_of(doc, system) for system in ("ours", "nchan")}
    if any(len(runs) > 1 for runs in polls.values()):
        rows += [
            "",
            "The long-poll target likewise (the long-poll runs come after the stream runs):",
            "",
            "| system | run | server ms per answer + re-arm | answered / expected |",
            "|---|---|---|---|",
        ]
        for system, runs in polls.items():
            for number, r in enumerate(runs, start=1):
                rows.append(
                    f"| {system} | {number} | {fmt(r['server_ms_per_poll'], 3)} | "
                    f"{r.get('answered', 0):,} / {r.get('expected', 0):,} |"
                )
    return [*rows, ""]


def poll_index(doc):
    out = {}
    for run in doc["runs"]:
        if run.get("mode") == "poll":
            lvs = levels_of(run)
            out[run["system"]] = lvs[0] if lvs else None
    return out


def sse_table(doc):
    idx = index(doc)
    rows = []
    hdr = (
        "| system | workers | N | setup /s | failures | first ms | median ms | p99 ms | "
        "fan-out ms (median / max) | vs nchan | vs naive | server µs/msg | vs nchan | "
        "Redis µs/msg | KB/idle stream | threads (max/proc) | Redis conns | msgs/s |"
    )
    rows.append(hdr)
    rows.append("|" + "---|" * (hdr.count("|") - 1))
    for run in doc["runs"]:
        if run.get("mode") != "sse":
            continue
        w = run["workers"]
        if run.get("skipped") or (run.get("error") and not levels_of(run)):
            why = run.get("skipped") or run.get("error")
            rows.append(f"| {run['label']} | {w} | – | skipped: {why} |" + " |" * 14)
            continue
        for lv in levels_of(run):
            n = lv["n"]
            nchan = idx.get(("nchan", w, n))
            naive = idx.get(("naive", w, n))
            s = lv.get("setup", {})
            rc = lv.get("redis_connections", {})
            fail = failures(lv)
            fail_s = f"**{fail:,}**" if fail else "0"
            if lv.get("error"):
                fail_s += f" ({lv['error']})"
            if s.get("errors"):
                fail_s += " (" + ", ".join(f"{k}: {v}" for k, v in s["errors"].items()) + ")"
            if (
                lv.get("complete_publishes") is not None
                and lv.get("publishes")
                and lv["complete_publishes"] < len(lv["publishes"])
            ):
                fail_s += f" ({len(lv['publishes']) - lv['complete_publishes']} fan-outs incomplete)"
            rows.append(
                f"| {run['label']} | {w} | {n:,} | {fmt(s.get('rate_per_s'))} | {fail_s} | "
                f"{fmt(lv.get('first_ms'))} | {fmt(lv.get('p50_ms'))} | {fmt(lv.get('p99_ms'))} | "
                f"{fmt(lv.get('fanout_ms'))} / {fmt(lv.get('fanout_max_ms'))} | "
                f"{fmt_ratio(ratio(lv.get('fanout_ms'), nchan and nchan.get('fanout_ms')))} | "
                f"{fmt_ratio(ratio(lv.get('fanout_ms'), naive and naive.get('fanout_ms')))} | "
                f"{fmt(lv.get('server_us_per_msg'))} | "
                f"{fmt_ratio(ratio(lv.get('server_us_per_msg'), nchan and nchan.get('server_us_per_msg')))} | "
                f"{fmt(lv.get('redis_us_per_msg'))} | {fmt(lv.get('rss_per_stream_kb'))} | "
                f"{fmt(lv.get('threads_max'))} | {fmt(rc.get('client_list') if rc.get('client_list') is not None else rc.get('proc'))} | "
                f"{fmt(lv.get('throughput_msgs_per_s'))} |"
            )
    return "\n".join(rows)


LARGE_N = 20000


def large_table(doc):
    """SSE levels of LARGE_N streams and more: set-up, failures, fan-out, server and loader CPU."""
    idx = index(doc)
    rows = [
        "| system | workers | N | setup /s | failures | fan-out ms (median) | vs nchan | server µs/msg | "
        "loader µs/msg | loader % of a core | shards | KB/idle stream |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in doc["runs"]:
        if run.get("mode") != "sse" or run.get("skipped"):
            continue
        for lv in levels_of(run):
            if lv["n"] < LARGE_N:
                continue
            w = run["workers"]
            if lv.get("error") and not lv.get("setup"):
                rows.append(f"| {run['label']} | {w} | {lv['n']:,} | {lv['error']} |" + " |" * 8)
                continue
            cpu = lv.get("cpu") or {}
            share = 100 * cpu["loader_s"] / cpu["wall_s"] if cpu.get("wall_s") else None
            nchan = idx.get(("nchan", w, lv["n"]))
            rows.append(
                f"| {run['label']} | {w} | {lv['n']:,} | {fmt(lv.get('setup', {}).get('rate_per_s'))} | "
                f"{failures(lv):,} | {fmt(lv.get('fanout_ms'))} | "
                f"{fmt_ratio(ratio(lv.get('fanout_ms'), nchan and nchan.get('fanout_ms')))} | "
                f"{fmt(lv.get('server_us_per_msg'))} | {fmt(lv.get('loader_us_per_msg'))} | "
                f"{fmt(share)} | {fmt(run.get('loader_shards'))} | {fmt(lv.get('rss_per_stream_kb'))} |"
            )
    if len(rows) == 2:
        rows.append("| (no level of 20,000 streams or more in this run) |" + " |" * 11)
    return "\n".join(rows)


def poll_table(doc):
    rows = [
        "| system | waiting polls N | answered with the event | all answered (ms after publish) | median ms | "
        "p99 ms | answered ≤ 1 s | dropped / early / empty / invalid | KB/poll | threads |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in doc["runs"]:
        if run.get("mode") != "poll":
            continue
        if run.get("skipped") or (run.get("error") and not levels_of(run)):
            rows.append(f"| {run['label']} | skipped: {run.get('skipped') or run.get('error')} |" + " |" * 8)
            continue
        for lv in levels_of(run):
            inv = sum((lv.get("invalid") or {}).values())
            n, got = lv["n"], lv.get("delivered", 0)
            # dropped: closed by the server before the publish (no answer at all)
            dropped = lv.get("lost", max(0, n - lv.get("expected", 0) - lv.get("early_answers", 0)))
            done = fmt(lv.get("all_answered_ms")) if got >= n else f"– ({n - got:,} never)"
            rows.append(
                f"| {run['label']} | {n:,} | {got:,} | "
                f"{done} | {fmt(lv.get('p50_ms'))} | {fmt(lv.get('p99_ms'))} | "
                f"{lv.get('answered_within_1s', 0):,} / {n:,} | "
                f"{dropped} / {lv.get('early_answers', 0)} / {lv.get('empty_answers', 0)} / {inv} | "
                f"{fmt(lv.get('rss_per_poll_kb'))} | {fmt(lv.get('threads_max'))} |"
            )
    return "\n".join(rows)


def targets(doc):
    """The targets of issues 5, 13 and 20 (the strictest stated), checked against this run (ours, one worker unless noted)."""
    idx = index(doc)
    pidx = poll_index(doc)
    out = []

    def row(name, target, measured, ok, note=""):
        mark = "–" if ok is None else ("met" if ok else "**missed**")
        out.append(f"| {name} | {target} | {measured} | {mark} | {note} |")

    def fanout(o, c):
        a, b = o.get("fanout_ms"), c and c.get("fanout_ms")
        return (f"{a:.1f} ms vs {b:.1f} ms = {a / b:.2f}×", a / b <= 1.0) if a and b else None

    def cpu(o, c):
        a, b = o.get("server_us_per_msg"), c and c.get("server_us_per_msg")
        return (f"{a:.1f} µs" + (f" (nchan {b:.1f} µs)" if b else ""), a <= b if b else None) if a is not None else None

    def setup(o, c):
        a, b = o.get("setup", {}).get("rate_per_s"), c and c.get("setup", {}).get("rate_per_s")
        return (f"{a:,.0f} /s vs {b:,.0f} /s = {a / b:.2f}×", a / b >= 0.8) if a and b else None

    def memory(o, c):
        a, b = o.get("rss_per_stream_kb"), c and c.get("rss_per_stream_kb")
        return (f"{a:.1f} KB" + (f" (nchan {b:.1f} KB)" if b is not None else ""), a <= 12) if a is not None else None

    checks = (
        ("fan-out completion median vs nchan", "≤ 1.0×", fanout),
        ("server CPU per delivered message", "≤ nchan's", cpu),
        ("stream set-up rate vs nchan", "≥ 0.8×", setup),
        ("memory per idle stream", "≤ 12 KB", memory),
    )
    for name, goal, check in checks:
        for n in (5000, 10000):
            # The median of the runs (the main one and the repeats), each system's figure apart.
            o, c = median_level(rounds_of(doc, "ours", n)), median_level(rounds_of(doc, "nchan", n))
            result = check(o, c) if o else None
            runs = f"median of {o['runs']} runs" if o and o["runs"] > 1 else "one run"
            row(f"{name}, N={n:,}", goal, *(result or ("not measured", None)), runs if result else "")
    o10 = idx.get(("ours", 1, 10000))
    if o10 and o10.get("threads_max") is not None:
        row("worker threads with 10,000 streams", "≤ 20", str(o10["threads_max"]), o10["threads_max"] <= 20)
    else:
        row("worker threads with 10,000 streams", "≤ 20", "not measured", None)
    p = pidx.get("ours")
    ours_polls, nchan_polls = poll_rounds_of(doc, "ours"), poll_rounds_of(doc, "nchan")
    if p and ours_polls:
        # The median of the runs (the main one and the repeats); none may lose a poll.
        v = median(r["server_ms_per_poll"] for r in ours_polls)
        c = median(r["server_ms_per_poll"] for r in nchan_polls)
        answered = sum(r["answered"] for r in ours_polls)
        expected = sum(r["expected"] for r in ours_polls)
        ok = v <= 0.1 and all(r["missing"] == 0 for r in ours_polls)
        row(
            "long-poll: CPU to answer and re-arm one poll",
            f"≤ 0.1 ms, {p['n']:,} polls × {ours_polls[0]['rounds']} rounds, none lost",
            f"{v:.3f} ms" + (f" (nchan {c:.3f} ms)" if c is not None else "") + f"; {answered:,}/{expected:,} answered",
            ok,
            f"median of {len(ours_polls)} runs" if len(ours_polls) > 1 else "",
        )
    else:
        row("long-poll: CPU to answer and re-arm one poll", "≤ 0.1 ms", "not measured", None)
    idles = [lv["idle"] for lv in rounds_of(doc, "ours", 10000) if lv.get("idle")]
    if idles:
        # The median of the runs that measured it (the main one and the repeats).
        v = median(idle["cpu_pct_of_core"] for idle in idles)
        c = median(lv["idle"]["cpu_pct_of_core"] for lv in rounds_of(doc, "nchan", 10000) if lv.get("idle"))
        row(
            "10,000 idle streams: CPU for heartbeats",
            "≤ 1 % of one core",
            f"{v:.2f} %"
            + (f" (nchan {c:.2f} %)" if c is not None else "")
            + f" over {idles[0]['seconds']:.0f} s; runs: "
            + ", ".join(
                f"{idle['cpu_pct_of_core']:.2f} % ({idle['heartbeats_received']:,} heartbeats)" for idle in idles
            ),
            v <= 1,
            f"median of {len(idles)} runs" if len(idles) > 1 else "",
        )
    else:
        row("10,000 idle streams: CPU for heartbeats", "≤ 1 % of one core", "not measured", None)
    big = idx.get(("ours", 1, 50000))
    if big and not big.get("error"):
        nchan = idx.get(("nchan", 1, 50000))
        r = ratio(big.get("fanout_ms"), nchan and nchan.get("fanout_ms"))
        kb = big.get("rss_per_stream_kb")
        row(
            "50,000 streams on one worker",
            "all connect, 0 lost, ≤ 12 KB per stream, fan-out ≤ 1.2× nchan",
            f"{failures(big):,} failures, {fmt(kb)} KB per stream, fan-out {fmt_ratio(r)}",
            failures(big) == 0 and kb is not None and kb <= 12 and r is not None and r <= 1.2,
        )
    else:
        row(
            "50,000 streams on one worker",
            "all connect, 0 lost, ≤ 12 KB, ≤ 1.2× nchan",
            (big or {}).get("error", "not measured"),
            None,
        )
    for n, w_list in ((10000, (1, 2)), (20000, (2,)), (100000, (2,))):
        found = [(w, idx[("ours", w, n)]) for w in w_list if ("ours", w, n) in idx]
        unrun = [lv["error"] for _, lv in found if lv.get("error") and not lv.get("setup")]
        if unrun:
            row(f"{n:,} streams, no failures", "0 failures", unrun[0], None)
        elif found:
            txt = "; ".join(
                f"{w} worker(s): {failures(lv):,} failures, "
                f"{lv.get('delivered', 0):,}/{lv.get('expected', 0):,} delivered"
                for w, lv in found
            )
            ok = all(failures(lv) == 0 and lv.get("delivered") for _, lv in found)
            note = "one process cannot hold 20,000 sockets here (RLIMIT_NOFILE hard limit 20,000)" if n == 20000 else ""
            row(f"{n:,} streams, no failures", "0 failures", txt, ok, note)
        else:
            row(f"{n:,} streams, no failures", "0 failures", "not measured", None)
    if p:
        ok = (
            p.get("all_answered_ms") is not None
            and p["all_answered_ms"] <= 1000
            and p.get("delivered") == p.get("expected")
            and p.get("expected") == p["n"]
        )
        row(
            f"long-poll: {p['n']:,} waiting all answered",
            "≤ 1 s after publish",
            f"{fmt(p.get('all_answered_ms'))} ms, {p.get('answered_within_1s', 0):,}/{p['n']:,} within 1 s",
            ok,
        )
    else:
        row("long-poll: 5,000 waiting all answered", "≤ 1 s after publish", "not measured", None)
    best = None
    for n in (10000, 5000):
        a, b = idx.get(("ours", 1, n)), idx.get(("ours", 2, n))
        if a and b and a.get("throughput_msgs_per_s") and b.get("throughput_msgs_per_s"):
            best = (n, b["throughput_msgs_per_s"] / a["throughput_msgs_per_s"], a, b)
            break
    if best:
        n, r, a, b = best
        row(
            f"2 workers vs 1, throughput at N={n:,}",
            "≥ 1.7×",
            f"{fmt(b['throughput_msgs_per_s'])} vs {fmt(a['throughput_msgs_per_s'])} msgs/s = {r:.2f}×",
            r >= 1.7,
            "2 cores in all: with 2 workers the server shares core 1 with the loader",
        )
    else:
        row("2 workers vs 1 throughput", "≥ 1.7×", "not measured", None)
    return "\n".join(["| target | goal | measured | | note |", "|---|---|---|---|---|", *out])


def measured(doc, mode, key):
    """(run, level, level[key]) for every level of ``mode`` runs that has ``key``."""
    for run in doc["runs"]:
        if run.get("mode") != mode or run.get("skipped"):
            continue
        for lv in levels_of(run):
            if lv.get(key):
                yield run, lv, lv[key]


def poll_rounds_table(doc):
    rows = [
        "| system | polls N | rounds | answered / expected | server ms per answer + re-arm | "
        "all answered per round (ms) | re-armed per round (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for run, lv, r in measured(doc, "poll", "poll_rounds"):
        rows.append(
            f"| {run['label']} | {lv['n']:,} | {r['rounds']} | {r['answered']:,} / {r['expected']:,} | "
            f"{fmt(r.get('server_ms_per_poll'), 3)} | "
            f"{', '.join(fmt(x, 0) for x in r.get('round_all_answered_ms', []))} | "
            f"{', '.join(fmt(x, 0) for x in r.get('rearm_ms', []))} |"
        )
    return "\n".join(rows)


def idle_table(doc):
    rows = [
        "| system | workers | idle streams | seconds | server CPU | % of one core | heartbeats received |",
        "|---|---|---|---|---|---|---|",
    ]
    for run, _, idle in measured(doc, "sse", "idle"):
        rows.append(
            f"| {run['label']} | {run['workers']} | {idle['streams']:,} | {fmt(idle['seconds'])} | "
            f"{fmt(idle['server_cpu_s'], 3)} s | {fmt(idle['cpu_pct_of_core'], 2)} % | "
            f"{idle['heartbeats_received']:,} |"
        )
    return "\n".join(rows)


def write_markdown(doc, path):
    m, v, st = doc["machine"], doc["versions"], doc["settings"]
    lines = [
        "# Fan-out benchmark results",
        "",
        f"Suite: **{doc['suite']}**, wall time {doc.get('wall_s', 0):.0f} s. "
        "Generated by `bench/run.py`; raw data in `bench/results/raw/results.json`. "
        "How to read it: `bench/README.md`.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    for k, val in m.items():
        lines.append(f"| {k} | {val} |")
    if doc.get("loadavg_end"):
        lines.append(f"| loadavg at end | {doc['loadavg_end']} |")
    for k, val in v.items():
        lines.append(f"| {k} | {val} |")
    lines += [
        f"| payload | {st['payload_bytes']} bytes JSON, {st['publishes_per_level']} publishes per level "
        "(twice as many at N ≤ 1,000), one at a time |",
        f"| pinning | server on CPU {st['server_cpus']} (2 workers: CPUs {st['two_worker_cpus']}); "
        f"loader, publisher and Redis on CPU {st['loader_cpus']} |",
        f"| connect | offered {st['offered_connect_rate']:,.0f} connections/s, ≤ 1,000 handshakes in flight |",
        f"| fd limit | {st['nofile_limit']:,} per process (hard limit) |",
        f"| Redis | {st['redis']} |",
        "",
        "## Targets (issues 5, 13 and 20)",
        "",
        targets(doc),
        "",
        *repeats_section(doc),
        "## SSE fan-out",
        "",
        "Latencies are from the publisher's timestamp (taken just before the publish call) to the "
        "moment the loader read the frame; *first / median / p99* are per publish, then the median "
        "over the publishes; *fan-out* is the latency to the **last** client (completion). "
        "Ratios compare the same N and worker count in this run. *failures* = streams not set up "
        "+ missing deliveries + duplicates + invalid frames + streams lost. *server µs/msg* is the "
        "CPU of the whole server process tree during the publish phase divided by delivered "
        "messages; *Redis µs/msg* the same for redis-server. *KB/idle stream*: tree RSS growth / "
        "streams. *msgs/s*: deliveries divided by the summed fan-out times.",
        "",
        sse_table(doc),
        "",
        "## Large levels: what the loader costs",
        "",
        "The loader runs on the same machine: at large N its own CPU is part of the picture "
        "(one worker: the loader has core 1 to itself; two workers: the workers share core 1 with "
        "it, so their figures are a lower bound). *loader % of a core*: the loader processes' CPU "
        "during the publish phase over its wall time; *shards*: loader processes, each connecting "
        "from its own 127.0.0.x address.",
        "",
        large_table(doc),
        "",
        "## Idle streams: heartbeats only",
        "",
        "Server CPU while the streams are idle, over one heartbeat interval (every stream gets one "
        "heartbeat comment in it); measured at N = 10,000 (the largest level if smaller) before its publishes.",
        "",
        idle_table(doc),
        "",
        "## Long-poll: N waiting, one publish",
        "",
        poll_table(doc),
        "",
        "## Long-poll rounds: answer and re-arm",
        "",
        "N polls wait; each publish answers all of them and every answered poll asks again at once "
        "(continuing after its answer: `since=` for ours, `If-Modified-Since`/`If-None-Match` for "
        "nchan, plainly for naive, which has no ids); the next publish waits until all N wait "
        "again. *server ms per answer + re-arm* is the server tree's CPU over all rounds (the last "
        "round's re-arm included) divided by the answers.",
        "",
        poll_rounds_table(doc),
        "",
        "![fan-out completion vs N](fanout.png)",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def write_plot(doc, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot (pip install -r bench/requirements.txt)", file=sys.stderr)
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = {"ours": "tab:blue", "naive": "tab:red", "eventstream": "tab:orange", "nchan": "tab:green"}
    for run in doc["runs"]:
        if run.get("mode") != "sse" or not levels_of(run):
            continue
        pts = [
            (lv["n"], lv.get("fanout_ms"), lv.get("p50_ms")) for lv in levels_of(run) if lv.get("fanout_ms") is not None
        ]
        if not pts:
            continue
        ls = "-" if run["workers"] == 1 else "--"
        lbl = f"{run['system']} ({run['workers']}w)"
        xs = [p[0] for p in pts]
        axes[0].plot(xs, [p[1] for p in pts], ls, marker="o", color=colors.get(run["system"]), label=lbl)
        axes[1].plot(xs, [p[2] for p in pts], ls, marker="o", color=colors.get(run["system"]), label=lbl)
    for ax, title in (
        (axes[0], "fan-out completion (last client), median"),
        (axes[1], "median client latency, median"),
    ):
        ax.set_xlabel("open streams N")
        ax.set_ylabel("ms after publish")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{doc['machine']['cpu']}, {doc['machine']['cores']} cores, {doc['settings']['payload_bytes']}-byte payload"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def write_all(doc, results_dir):
    write_markdown(doc, os.path.join(results_dir, "RESULTS.md"))
    write_plot(doc, os.path.join(results_dir, "fanout.png"))


# ---- py-spy


def summarize_pyspy(raw_path, top=40):
    """Self and inclusive sample shares from py-spy's collapsed-stack ('raw') output."""
    self_c, incl_c = Counter(), Counter()
    total = 0
    with open(raw_path) as f:
        for line in f:
            stack, _, cnt = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            cnt = int(cnt)
            total += cnt
            frames = stack.split(";")
            # frames look like "func (file.py:line)": drop line numbers for grouping
            names = [fr.rsplit(":", 1)[0] + ")" if fr.endswith(")") and ":" in fr else fr for fr in frames]
            self_c[names[-1]] += cnt
            for nm in set(names):
                incl_c[nm] += cnt
    return {
        "total_samples": total,
        "self": [(k, v / total) for k, v in self_c.most_common(top)] if total else [],
        "inclusive": [(k, v / total) for k, v in incl_c.most_common(top)] if total else [],
    }


def profile_markdown(prof):
    lines = [
        "# py-spy profiles of our server (one worker)",
        "",
        "Recorded by `bench/run.py --profile` with `py-spy record --nonblocking -r 250`, "
        "each for exactly one phase of the loader. Idle samples (threads waiting) are "
        "excluded, so shares are of the time the process was busy. Frames are grouped "
        "by function (line numbers dropped).",
        "",
    ]
    res = prof.get("result") or {}
    lvs = res.get("levels") or []
    if lvs:
        lv = lvs[0]
        s = lv.get("setup", {})
        lines.append(
            f"N = {lv['n']:,} streams: set-up {fmt(s.get('rate_per_s'))} streams/s; "
            f"fan-out median {fmt(lv.get('fanout_ms'))} ms, "
            f"server {fmt(lv.get('server_us_per_msg'))} µs/msg, "
            f"{lv.get('delivered', 0):,}/{lv.get('expected', 0):,} delivered."
        )
        lines.append("")
    for phase, title in (
        ("setup", "While N streams are being set up"),
        ("fanout", "While publishes fan out to N streams"),
    ):
        ph = (prof.get("phases") or {}).get(phase) or {}
        s = ph.get("summary")
        lines += [f"## {title}", ""]
        if not s:
            lines += ["(no samples)", ""]
            continue
        lines += [
            f"{s['total_samples']:,} busy samples. Flame graph: `{ph.get('svg')}`.",
            "",
            "Self time (top):",
            "",
            "| share | frame |",
            "|---|---|",
        ]
        lines += [f"| {v * 100:.1f}% | `{k}` |" for k, v in s["self"][:20]]
        lines += ["", "Inclusive (top, below the event loop):", "", "| share | frame |", "|---|---|"]
        skip = (
            "main (uvicorn",
            "Command.",
            "Context.invoke",
            "Runner.run",
            "run (uvicorn",
            "<module> (uvicorn",
            "Server.run",
            "asyncio_run",
        )
        lines += [f"| {v * 100:.1f}% | `{k}` |" for k, v in s["inclusive"] if not k.startswith(skip)][:20]
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(BENCH, "results", "raw", "results.json")
    with open(src) as f:
        d = json.load(f)
    write_all(d, os.path.dirname(os.path.dirname(os.path.abspath(src))))
    print("written", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(src))), "RESULTS.md"))
