"""Publisher process for the benchmark: one per system under test.

Started by loadgen.py with the system's own Python (the eventstream baseline
lives in its own venv). Protocol on stdin/stdout, one line each way:

    -> P <seq> <topic>\n
    <- OK <seq> <id-or-dash> <publish-call-µs>\n     or   ERR <seq> <message>\n
    -> Q\n                                              (quit)

The payload is JSON of exactly ``--size`` bytes:
``{"seq": <seq>, "ts": <time.monotonic_ns() just before publishing>, "pad": "xx.."}``
CLOCK_MONOTONIC is system-wide on Linux, so the loader (another process)
subtracts ``ts`` from its own monotonic receive time to get the latency.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time


def make_payload(seq: int, size: int) -> dict:
    base = {"seq": seq, "ts": time.monotonic_ns(), "pad": ""}
    n = len(json.dumps(base, separators=(",", ":")))
    base["pad"] = "x" * max(0, size - n)
    return base


def publisher_ours(args):
    # The product's own publish API, imported lazily so this file exists before it does.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    sys.path.insert(0, args.project_dir)
    import django

    django.setup()
    from events import publish

    def pub(topic, payload):
        return publish(topic, data=payload)

    return pub


def publisher_naive(args):
    import redis

    r = redis.Redis.from_url(args.redis_url)
    r.ping()
    prefix = args.prefix

    def pub(topic, payload):
        r.publish(f"{prefix}:{topic}", json.dumps(payload, separators=(",", ":")))
        return None

    return pub


def publisher_eventstream(args):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "es_project.settings")
    sys.path.insert(0, args.project_dir)
    import django

    django.setup()
    from django_eventstream import send_event

    def pub(topic, payload):
        send_event(topic, "message", payload)
        return None

    return pub


def publisher_nchan(args):
    host, port = "127.0.0.1", args.port
    state = {"conn": http.client.HTTPConnection(host, port, timeout=10)}

    def pub(topic, payload):
        body = json.dumps(payload, separators=(",", ":")).encode()
        for attempt in range(2):
            conn = state["conn"]
            try:
                conn.request("POST", f"/pub?id={topic}", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.status not in (201, 202):
                    raise RuntimeError(f"nchan publish status {resp.status}")
                return None
            except (http.client.HTTPException, OSError):
                conn.close()
                state["conn"] = http.client.HTTPConnection(host, port, timeout=10)
                if attempt:
                    raise
        return None

    return pub


FACTORIES = {
    "ours": publisher_ours,
    "naive": publisher_naive,
    "eventstream": publisher_eventstream,
    "nchan": publisher_nchan,
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--system", required=True, choices=sorted(FACTORIES))
    ap.add_argument("--size", type=int, default=100, help="payload JSON size in bytes")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--prefix", default="bench")
    ap.add_argument("--port", type=int, default=0, help="nchan port")
    ap.add_argument("--project-dir", default=".")
    args = ap.parse_args()

    try:
        pub = FACTORIES[args.system](args)
    except Exception as e:  # reported to the loader, which reports it in the results
        sys.stdout.write(f"FATAL {type(e).__name__}: {e}\n".replace("\n", " ") + "\n")
        sys.stdout.flush()
        return 1
    sys.stdout.write("READY\n")
    sys.stdout.flush()

    for line in sys.stdin:
        parts = line.split()
        if not parts or parts[0] == "Q":
            break
        if parts[0] != "P":
            continue
        seq, topic = int(parts[1]), parts[2]
        payload = make_payload(seq, args.size)
        t0 = time.perf_counter()
        try:
            ident = pub(topic, payload)
        except Exception as e:
            msg = f"{type(e).__name__}: {e}".replace("\n", " ")
            sys.stdout.write(f"ERR {seq} {msg}\n")
        else:
            us = int((time.perf_counter() - t0) * 1e6)
            sys.stdout.write(f"OK {seq} {ident or '-'} {us}\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
