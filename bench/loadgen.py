#!/usr/bin/env python3
"""Load generator for SSE / long-poll fan-out (uvloop, raw asyncio protocols).

Two roles in one file:

* coordinator (default): measures one server (already running) through a
  ramp of stream counts, drives a publisher process, reads /proc for the
  server's CPU, RSS, threads and Redis connections, writes a JSON result;
* shard (``--shard``): holds the client connections. One process can hold
  about ``RLIMIT_NOFILE`` sockets (20,000 on the reference machine, and the
  hard limit cannot be raised there), so the coordinator starts as many
  shards as the largest level needs; each connects from its own source
  address (127.0.0.<base>, <base + 1>, ...; ``--source-base``, a fresh one per
  run), as one address has only ~28,000 ephemeral ports towards one server
  port and those an earlier run left in TIME_WAIT slow its connects. The shards are plain HTTP/1.1 clients on
  raw sockets: no HTTP library per connection, an incremental chunked
  decoder and an incremental SSE parser that validates every frame.

Only 127.0.0.1 is ever connected to (from 127.0.0.0/8 addresses).

Typical stand-alone use (bench/run.py does this for every system):

    python bench/loadgen.py --system ours --port 8001 --server-pid 1234 \
        --levels 1000,5000 --publishes 10 --out /tmp/r.json \
        --publisher-cmd '[".venv/bin/python", "bench/publisher.py", "--system", "ours"]'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import signal
import socket
import sys
import time
from collections import Counter

try:
    import uvloop
except ImportError:  # still works, only slower
    uvloop = None

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procfs

HOST = "127.0.0.1"
SELF = os.path.abspath(__file__)
monotonic_ns = time.monotonic_ns

# --------------------------------------------------------------------------
# What each system's wire format looks like
# --------------------------------------------------------------------------

PROFILES = {
    # our product (docs/reference/wire.md): envelope {"topic", "data"}, event "invalidate", id = stream id
    "ours": {
        "sse_path": "/events/stream/?topic={topic}",
        "poll_path": "/events/poll/?topic={topic}",
        "event_name": "invalidate",
        "envelope": True,
        "id_re": r"\d+-\d+",
        "control_events": [],
        "accept": "text/event-stream",
        "poll_format": "events_list",
        # long-poll rounds: ask again with since=<last_id>
        "poll_resume": "since",
    },
    # the same on a Redis Cluster: composite ids (one position per slot group, events/cluster/positions.py)
    "ours-cluster": {
        "sse_path": "/events/stream/?topic={topic}",
        "poll_path": "/events/poll/?topic={topic}",
        "event_name": "invalidate",
        "envelope": True,
        "id_re": r"c[0-9a-f]+(?:\.[0-9a-f]{3,}(?:-[0-9a-f]+)?)+",
        "control_events": [],
        "accept": "text/event-stream",
        "poll_format": "events_list",
    },
    # deliberately naive Django view: same wire format, no ids
    "naive": {
        "sse_path": "/events/stream/?topic={topic}",
        "poll_path": "/events/poll/?topic={topic}",
        "event_name": "invalidate",
        "envelope": True,
        "id_re": None,
        "control_events": [],
        "accept": "text/event-stream",
        "poll_format": "events_list",
        # no ids: ask again plainly (it answers only what comes next)
        "poll_resume": None,
    },
    # django-eventstream 5.3: event "message", data = payload, control events
    "eventstream": {
        "sse_path": "/events/?channel={topic}",
        "poll_path": None,
        "event_name": "message",
        "envelope": False,
        "id_re": None,
        "control_events": ["stream-open", "keep-alive"],
        "accept": "text/event-stream",
        "poll_format": None,
    },
    # nginx + nchan: data = payload, id = "<time>:<tag>"; plain GET = long-poll
    "nchan": {
        "sse_path": "/sub/{topic}",
        "poll_path": "/sub/{topic}",
        "event_name": "message",
        "envelope": False,
        "id_re": r"\d+:\d+",
        # its heartbeat (nchan_eventsource_ping_interval) is a data-less "ping" event
        "control_events": ["ping"],
        "accept": "text/event-stream",
        "poll_accept": "*/*",
        "poll_format": "raw",
        # its long-poll protocol: the answer's Last-Modified / Etag sent back
        "poll_resume": "headers",
    },
}


def composite_key(idv: bytes) -> tuple:
    """A composite id as ``((group, ms, seq), ...)``: grows whenever one group's position does."""
    base_text, *entries = idv.decode().split(".")
    base = int(base_text[1:], 16)
    key = []
    for entry in entries:
        delta, _, seq = entry[2:].partition("-")
        key.append((int(entry[:2], 16), base - int(delta, 16), int(seq or "0", 16)))
    return tuple(key)


def pct(sorted_vals, q):
    """q-quantile (nearest rank) of an ascending list."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, math.ceil(q * len(sorted_vals)) - 1))
    return sorted_vals[k]


def median(vals):
    vals = sorted(v for v in vals if v is not None)
    if not vals:
        return None
    n = len(vals)
    return vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2


# ==========================================================================
# Shard: the client connections
# ==========================================================================

EV, CTRL, COMMENT, BAD = 1, 2, 3, 4


class Shard:
    def __init__(self, cfg):
        self.cfg = cfg
        self.profile = PROFILES[cfg["system"]]
        self.port = cfg["port"]
        self.topic = cfg.get("topic", "bench")
        # This shard's own source address on 127.0.0.0/8 (several shards): one
        # address has ~28,000 ephemeral ports towards one server port.
        self.local_addr = (cfg["source"], 0) if cfg.get("source") else None
        p = self.profile
        path = p["sse_path"].format(topic=self.topic)
        self.sse_request = (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            f"Accept: {p['accept']}\r\nCache-Control: no-cache\r\n"
            f"User-Agent: bench-loadgen\r\n\r\n"
        ).encode()
        if p["poll_path"]:
            ppath = p["poll_path"].format(topic=self.topic)
            self.poll_request = (
                f"GET {ppath} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
                f"Accept: {p.get('poll_accept', 'application/json')}\r\n"
                f"User-Agent: bench-loadgen\r\n\r\n"
            ).encode()
        else:
            self.poll_request = None
        self.id_re = re.compile(p["id_re"].encode()) if p["id_re"] else None
        self.control = {c.encode() for c in p["control_events"]}
        self.event_name = p["event_name"].encode()
        self.cache: dict[bytes, tuple] = {}
        self.conns: list = []
        self.lat: dict[int, list[int]] = {}
        self.targets: dict[int, int] = {}
        self.dups = 0
        self.invalid = Counter()
        self.lost = 0
        self.early = 0  # long-poll answered before the publish
        self.empty = 0  # long-poll answered without an event
        self.comments = 0  # SSE comments and data-less control events (heartbeats) received
        self.rearm = False  # long-poll rounds: every answered poll asks again at once
        self.rearmed = 0
        self.inflight = 0
        self.setup_errors = Counter()
        self.tasks: set[asyncio.Task] = set()
        self.out = sys.stdout

    # ---- messages to the coordinator
    def send(self, msg):
        self.out.write(json.dumps(msg) + "\n")
        self.out.flush()

    def bad(self, reason):
        self.invalid[reason] += 1

    # ---- frame validation (cached: identical bytes are validated once)
    def parse_block(self, block: bytes):
        name = None
        idv = None
        data_lines = []
        for line in block.split(b"\n"):
            if not line or line[0] == 58:  # ':' comment
                continue
            field, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                data_lines.append(value)
            elif field == b"event":
                name = value
            elif field == b"id":
                idv = value
            elif field == b"retry":
                if not value.isdigit():
                    return (BAD, "retry not digits")
            else:
                return (BAD, f"unknown field {field[:20]!r}")
        if name is None:
            name = b"message"
        if not data_lines:
            if name in self.control:
                return (CTRL,)
            if name == b"message" and idv is None:
                return (COMMENT,)
            return (BAD, "event without data")
        if name in self.control:
            return (CTRL,)
        if name != self.event_name:
            return (BAD, f"unexpected event {name[:30]!r}")
        try:
            obj = json.loads(b"\n".join(data_lines))
        except ValueError:
            return (BAD, "data not JSON")
        if self.profile["envelope"]:
            if not isinstance(obj, dict) or set(obj) != {"topic", "data"}:
                return (BAD, "envelope not {topic,data}")
            topic, payload = obj["topic"], obj["data"]
        else:
            topic, payload = None, obj
        if (
            not isinstance(payload, dict)
            or not isinstance(payload.get("seq"), int)
            or not isinstance(payload.get("ts"), int)
        ):
            return (BAD, "payload without seq/ts")
        idt = None
        if self.id_re is not None:
            if idv is None or not self.id_re.fullmatch(idv):
                return (BAD, "missing or malformed id")
            idt = composite_key(idv) if idv.startswith(b"c") else tuple(int(x) for x in re.split(rb"[-:]", idv))
        return (EV, topic, payload["seq"], payload["ts"], idt)

    def block_result(self, block):
        r = self.cache.get(block)
        if r is None:
            if len(self.cache) > 100_000:
                self.cache.clear()
            r = self.cache[block] = self.parse_block(block)
        return r

    def delivered(self, conn, seq, ts, now):
        bit = 1 << seq
        if conn.seen & bit:
            self.dups += 1
            return
        conn.seen |= bit
        lst = self.lat.get(seq)
        if lst is None:
            lst = self.lat[seq] = []
        lst.append(now - ts)
        t = self.targets.get(seq)
        if t is not None and len(lst) >= t:
            self.complete(seq)

    def complete(self, seq):
        del self.targets[seq]
        self.send({"ev": "done", "seq": seq})

    def conn_lost(self, conn):
        """A counted client went away: it cannot receive pending events."""
        self.lost += 1
        for seq in list(self.targets):
            if not conn.seen & (1 << seq):
                self.targets[seq] -= 1
                if len(self.lat.get(seq, ())) >= self.targets[seq]:
                    del self.targets[seq]
                    self.send({"ev": "done", "seq": seq})

    # ---- commands
    async def cmd_open(self, n, rate, concurrency, timeout, mode):
        loop = asyncio.get_running_loop()
        cls = SSEConn if mode == "sse" else PollConn
        if mode == "poll" and self.poll_request is None:
            return {"ev": "opened", "ok": 0, "failed": n, "errors": {"no long-poll endpoint": n}}
        self.setup_errors = Counter()
        new = []
        t0 = monotonic_ns()
        deadline = t0 + int(timeout * 1e9)
        started = 0
        while started < n:
            now = monotonic_ns()
            if now > deadline:
                break
            due = min(n, int((now - t0) * rate / 1e9) + 1)
            while started < due and self.inflight < concurrency:
                c = cls(self, len(self.conns) + len(new))
                new.append(c)
                self.inflight += 1
                started += 1
                task = loop.create_task(c.connect(loop))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            await asyncio.sleep(0.001)
        while self.inflight > 0 and monotonic_ns() < deadline:  # noqa: ASYNC110 (bounded poll)
            await asyncio.sleep(0.005)
        ok = 0
        last = t0
        setup_ms = []
        for c in new:
            if c.ready_ns:
                ok += 1
                last = max(last, c.ready_ns)
                setup_ms.append((c.ready_ns - c.start_ns) / 1e6)
            elif c.fail_reason is None:
                c.fail("timeout")
                c.abort()
        self.inflight = 0
        if started < n:
            self.setup_errors["not attempted (set-up time limit)"] += n - started
        self.conns.extend(c for c in new if c.ready_ns)
        wall = (last - t0) / 1e9
        setup_ms.sort()
        return {
            "ev": "opened",
            "ok": ok,
            "failed": n - ok,
            "errors": dict(self.setup_errors),
            "wall_s": wall,
            "t0": t0,
            "t_last": last,
            "setup_p50_ms": pct(setup_ms, 0.5),
            "setup_p99_ms": pct(setup_ms, 0.99),
        }

    def cmd_expect(self, seq):
        alive = sum(1 for c in self.conns if c.alive and not (c.seen >> seq) & 1 and not getattr(c, "answered", False))
        already = len(self.lat.get(seq, ()))
        target = alive + already
        if already >= target:
            return {"ev": "expecting", "seq": seq, "target": target, "done": True}
        self.targets[seq] = target
        return {"ev": "expecting", "seq": seq, "target": target, "done": False}

    def cmd_stats(self, seqs):
        out = {str(s): self.lat.get(s, []) for s in seqs}
        res = {
            "ev": "stats",
            "lat": out,
            "dups": self.dups,
            "invalid": dict(self.invalid),
            "lost": self.lost,
            "early": self.early,
            "empty": self.empty,
            "alive": sum(1 for c in self.conns if c.alive),
        }
        self.dups = 0
        self.invalid = Counter()
        self.lost = 0
        self.early = 0
        self.empty = 0
        for s in seqs:
            self.lat.pop(s, None)
        return res

    def cmd_close(self):
        for c in self.conns:
            c.closing = True
            c.abort()
        n = len(self.conns)
        self.conns = []
        self.targets.clear()
        return {"ev": "closed", "n": n}

    async def serve(self):
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 24)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self.send({"ev": "hello", "pid": os.getpid(), "nofile": procfs.raise_nofile()})
        while True:
            line = await reader.readline()
            if not line:
                break
            msg = json.loads(line)
            cmd = msg["cmd"]
            if cmd == "open":
                self.send(await self.cmd_open(msg["n"], msg["rate"], msg["concurrency"], msg["timeout"], msg["mode"]))
            elif cmd == "expect":
                self.send(self.cmd_expect(msg["seq"]))
            elif cmd == "stats":
                self.send(self.cmd_stats(msg["seqs"]))
            elif cmd == "rearm":
                self.rearm = bool(msg["on"])
                self.send({"ev": "rearm", "on": self.rearm})
            elif cmd == "counts":
                waiting = sum(1 for c in self.conns if c.alive and not getattr(c, "answered", False))
                self.send({"ev": "counts", "comments": self.comments, "waiting": waiting, "rearmed": self.rearmed})
            elif cmd == "close":
                self.send(self.cmd_close())
                await asyncio.sleep(0.05)
            elif cmd == "quit":
                self.cmd_close()
                break


# Linux: bind() picks no port, connect() does (IP_BIND_ADDRESS_NO_PORT). A
# plain bind(addr, 0) must find a port free for every destination, which
# slows to a crawl once thousands of the address's ports are taken; connect
# only needs the 4-tuple to be new.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


async def connected_from(loop, shard):
    """A TCP socket from the shard's own source address, connected to the server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind(shard.local_addr)
        await loop.sock_connect(sock, (HOST, shard.port))
    except BaseException:
        sock.close()
        raise
    return sock


class BaseConn(asyncio.Protocol):
    __slots__ = (
        "alive",
        "chunk_left",
        "chunked",
        "closing",
        "eof",
        "expect_crlf",
        "fail_reason",
        "hbuf",
        "idx",
        "in_body",
        "raw",
        "ready_ns",
        "seen",
        "shard",
        "start_ns",
        "status",
        "transport",
    )

    def __init__(self, shard, idx):
        self.shard = shard
        self.idx = idx
        self.transport = None
        self.start_ns = 0
        self.ready_ns = 0
        self.fail_reason = None
        self.alive = False
        self.closing = False
        self.hbuf = b""
        self.in_body = False
        self.chunked = False
        self.raw = b""
        self.chunk_left = 0
        self.expect_crlf = False
        self.seen = 0
        self.status = 0
        self.eof = False  # last chunk of a chunked body seen

    async def connect(self, loop):
        self.start_ns = monotonic_ns()
        try:
            if self.shard.local_addr is None:
                await loop.create_connection(lambda: self, HOST, self.shard.port)
            else:
                await loop.create_connection(lambda: self, sock=await connected_from(loop, self.shard))
        except OSError as e:
            self.fail("connect: " + (os.strerror(e.errno) if e.errno else type(e).__name__))
        except Exception as e:
            self.fail("connect: " + type(e).__name__)

    def fail(self, reason):
        if self.fail_reason is None and not self.ready_ns:
            self.fail_reason = reason
            self.shard.setup_errors[reason] += 1
            self.shard.inflight -= 1
            self.abort()

    def set_ready(self):
        if not self.ready_ns and self.fail_reason is None:
            self.ready_ns = monotonic_ns()
            self.alive = True
            self.shard.inflight -= 1

    def abort(self):
        if self.transport is not None:
            self.transport.abort()

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        was_alive = self.alive
        self.alive = False
        if not self.ready_ns:
            self.fail("closed before ready")
        elif was_alive and not self.closing:
            self.on_lost()

    def on_lost(self):
        self.shard.conn_lost(self)

    def parse_head(self, data):
        """Returns the body bytes that followed the head, or None if incomplete."""
        self.hbuf += data
        i = self.hbuf.find(b"\r\n\r\n")
        if i < 0:
            if len(self.hbuf) > 65536:
                self.fail("header too long")
            return None
        head = self.hbuf[:i].decode("latin-1").split("\r\n")
        rest = self.hbuf[i + 4 :]
        self.hbuf = b""
        try:
            self.status = int(head[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            self.fail("bad status line")
            return None
        hdrs = {}
        for h in head[1:]:
            k, _, v = h.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        self.in_body = True
        self.chunked = "chunked" in hdrs.get("transfer-encoding", "").lower()
        self.on_head(hdrs)
        return rest

    def on_head(self, hdrs):
        pass

    def dechunk(self, data):
        if not self.raw and not self.chunk_left and not self.expect_crlf:
            # fast path: exactly one whole chunk (the common case for a live stream)
            i = data.find(b"\r\n", 0, 20)
            if i > 0:
                try:
                    size = int(data[:i], 16)
                except ValueError:
                    size = -1
                if size > 0 and len(data) == i + size + 4 and data[-2:] == b"\r\n":
                    return data[i + 2 : i + 2 + size]
        raw = self.raw + data if self.raw else data
        pos = 0
        n = len(raw)
        out = []
        while pos < n:
            if self.chunk_left:
                take = min(self.chunk_left, n - pos)
                out.append(raw[pos : pos + take])
                pos += take
                self.chunk_left -= take
                if not self.chunk_left:
                    self.expect_crlf = True
                continue
            if self.expect_crlf:
                if n - pos < 2:
                    break
                if raw[pos : pos + 2] != b"\r\n":
                    self.shard.bad("chunk framing")
                    self.abort()
                    return b""
                pos += 2
                self.expect_crlf = False
                continue
            i = raw.find(b"\r\n", pos)
            if i < 0:
                if n - pos > 64:
                    self.shard.bad("chunk size line")
                    self.abort()
                    return b""
                break
            try:
                size = int(raw[pos:i].split(b";", 1)[0], 16)
            except ValueError:
                self.shard.bad("chunk size")
                self.abort()
                return b""
            pos = i + 2
            if size == 0:
                self.eof = True
                pos = n
                break
            self.chunk_left = size
        self.raw = raw[pos:] if pos < n else b""
        return out[0] if len(out) == 1 else b"".join(out)


class SSEConn(BaseConn):
    __slots__ = ("last_id", "sbuf")

    def __init__(self, shard, idx):
        super().__init__(shard, idx)
        self.sbuf = b""
        self.last_id = None

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.shard.sse_request)

    def on_head(self, hdrs):
        if self.status != 200:
            self.fail(f"HTTP {self.status}")
        elif not hdrs.get("content-type", "").startswith("text/event-stream"):
            self.fail("content-type " + hdrs.get("content-type", "-")[:40])

    def data_received(self, data):
        # hot path: one call per client per event; keep it lean
        now = monotonic_ns()
        if not self.in_body:
            data = self.parse_head(data)
            if not data or self.fail_reason:
                return
        if self.chunked:
            body = None
            if not self.raw and not self.chunk_left and not self.expect_crlf:
                # exactly one whole chunk: "<hex>\r\n<bytes>\r\n"
                i = data.find(b"\r\n", 0, 20)
                if i > 0 and data[-2:] == b"\r\n":
                    try:
                        if len(data) == i + 4 + int(data[:i], 16):
                            body = data[i + 2 : -2]
                    except ValueError:
                        pass
            if body is None:
                body = self.dechunk(data)
                if self.eof:
                    self.eof = False
                    if self.ready_ns and not self.closing:
                        self.shard.bad("server ended stream")
                    self.abort()
        else:
            body = data
        if not body:
            return
        if not self.ready_ns:
            self.set_ready()
        buf = self.sbuf + body if self.sbuf else body
        if b"\r" in buf:
            keep_cr = buf.endswith(b"\r")
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep_cr:  # may be the first half of CRLF: decide with the next read
                buf = buf[:-1] + b"\r"
        parts = buf.split(b"\n\n")
        self.sbuf = parts.pop()
        if len(self.sbuf) > 1 << 20:
            self.shard.bad("frame > 1 MiB")
            self.abort()
            return
        shard = self.shard
        cache = shard.cache
        for block in parts:
            if not block:
                continue
            r = cache.get(block) or shard.block_result(block)
            if r[0] == EV:
                _, topic, seq, ts, idt = r
                if topic is not None and topic != shard.topic:
                    shard.bad("wrong topic")
                    continue
                if idt is not None:
                    if self.last_id is not None and idt <= self.last_id:
                        shard.bad("id not increasing")
                    self.last_id = idt
                shard.delivered(self, seq, ts, now)
            elif r[0] == COMMENT or r[0] == CTRL:
                shard.comments += 1  # heartbeats: comments, or control events (keep-alive)
            elif r[0] == BAD:
                shard.bad(r[1])


class PollConn(BaseConn):
    """One long-poll request; 'ready' once the request is written.

    In long-poll rounds (``rearm``) an answered poll at once asks again on the
    same kept-alive connection, continuing after what it got, as a browser
    client does: ours and naive with ``since=<last_id>``, nchan with the
    answer's ``Last-Modified`` and ``Etag`` as ``If-Modified-Since`` /
    ``If-None-Match``.
    """

    __slots__ = ("answered", "body", "clen", "etag", "last_modified", "request")

    def __init__(self, shard, idx, request=None):
        super().__init__(shard, idx)
        self.body = []
        self.clen = None
        self.answered = False
        self.request = request or shard.poll_request
        self.etag = None
        self.last_modified = None

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request)
        self.set_ready()

    def on_head(self, hdrs):
        if "content-length" in hdrs:
            self.clen = int(hdrs["content-length"])
        self.etag = hdrs.get("etag")
        self.last_modified = hdrs.get("last-modified")

    def rearm(self, last_id):
        """Ask again at once on the same (kept-alive) connection, continuing after this answer."""
        shard = self.shard
        path = shard.profile["poll_path"].format(topic=shard.topic)
        extra = ""
        resume = shard.profile.get("poll_resume")
        if resume == "since":
            if not last_id:
                shard.bad("poll answer without last_id")
                self.finish()
                return
            path += f"&since={last_id}"
        elif resume == "headers":
            extra = "".join(
                f"{name}: {value}\r\n"
                for name, value in (("If-Modified-Since", self.last_modified), ("If-None-Match", self.etag))
                if value
            )
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{shard.port}\r\n"
            f"Accept: {shard.profile.get('poll_accept', 'application/json')}\r\n{extra}"
            f"User-Agent: bench-loadgen\r\n\r\n"
        ).encode()
        # Back to "waiting for a response head".
        self.answered = False
        self.body = []
        self.clen = None
        self.in_body = False
        self.chunked = False
        self.eof = False
        self.raw = b""
        self.chunk_left = 0
        self.expect_crlf = False
        self.hbuf = b""
        self.status = 0
        shard.rearmed += 1
        self.transport.write(self.request)

    def data_received(self, data):
        now = monotonic_ns()
        if not self.in_body:
            data = self.parse_head(data)
            if data is None:
                return
        if self.chunked:
            b = self.dechunk(data)
            if b:
                self.body.append(b)
            if self.eof:
                self.answer(now)
        else:
            self.body.append(data)
            if self.clen is not None and sum(map(len, self.body)) >= self.clen:
                self.answer(now)

    def connection_lost(self, exc):
        if self.in_body and not self.answered and self.clen is None and not self.chunked:
            self.answer(monotonic_ns())  # body delimited by close
        super().connection_lost(exc)

    def answer(self, now):
        if self.answered:
            return
        self.answered = True
        shard = self.shard
        if self.status != 200:
            shard.bad(f"poll HTTP {self.status}")
            self.finish()
            return
        try:
            obj = json.loads(b"".join(self.body))
        except ValueError:
            shard.bad("poll body not JSON")
            self.finish()
            return
        last_id = obj.get("last_id") if isinstance(obj, dict) else None
        if shard.profile["poll_format"] == "events_list":
            if not isinstance(obj, dict) or not isinstance(obj.get("events"), list):
                shard.bad("poll body without events list")
                self.finish()
                return
            evs = obj["events"]
            if not evs:
                shard.empty += 1
            for e in evs:
                if not isinstance(e, dict) or e.get("topic") != shard.topic:
                    shard.bad("poll event wrong topic/shape")
                    continue
                p = e.get("data")
                if isinstance(p, dict) and isinstance(p.get("seq"), int):
                    self.got(p["seq"], p["ts"], now)
                else:
                    shard.bad("poll payload without seq/ts")
        else:
            if isinstance(obj, dict) and isinstance(obj.get("seq"), int):
                self.got(obj["seq"], obj["ts"], now)
            else:
                shard.bad("poll payload without seq/ts")
        if shard.rearm and not self.closing:
            self.rearm(last_id)
        else:
            self.finish()

    def got(self, seq, ts, now):
        if seq not in self.shard.targets and not self.shard.lat.get(seq):
            self.shard.early += 1
        self.shard.delivered(self, seq, ts, now)

    def finish(self):
        self.closing = True
        self.alive = False
        self.abort()


def shard_main(cfg):
    procfs.raise_nofile()
    if uvloop is not None:
        uvloop.install()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(Shard(cfg).serve())


# ==========================================================================
# Coordinator
# ==========================================================================


class ShardHandle:
    def __init__(self, proc):
        self.proc = proc
        self.replies: asyncio.Queue = asyncio.Queue()
        self.pid = proc.pid
        self.task = None

    async def reader(self, coord):
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                await self.replies.put({"ev": "eof"})
                return
            msg = json.loads(line)
            if msg["ev"] == "done":
                coord.on_done(self, msg["seq"])
            else:
                await self.replies.put(msg)

    async def call(self, msg, timeout):
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        await self.proc.stdin.drain()
        r = await asyncio.wait_for(self.replies.get(), timeout)
        if r.get("ev") == "eof":
            raise RuntimeError("load shard died")
        return r


class Coordinator:
    def __init__(self, args):
        self.a = args
        self.shards: list[ShardHandle] = []
        self.done: dict[int, set] = {}
        self.done_ev: dict[int, asyncio.Event] = {}
        self.seq = 0
        self.pub = None
        self.t_start = time.monotonic()

    def remaining(self):
        return self.a.budget - (time.monotonic() - self.t_start)

    def log(self, *parts):
        line = " ".join(str(p) for p in parts)
        print(f"[loadgen {self.a.system}] {line}", file=sys.stderr, flush=True)

    def on_done(self, shard, seq):
        self.done.setdefault(seq, set()).add(shard.pid)
        if len(self.done[seq]) >= len(self.shards) and seq in self.done_ev:
            self.done_ev[seq].set()

    # ---- processes
    async def start_shards(self, n):
        for i in range(n):
            cfg = {"system": self.a.system, "port": self.a.port, "topic": self.a.topic}
            # One source address per shard: ports do not run out above ~28,000
            # connections. And one set per run (--source-base): the ports an
            # earlier run left in TIME_WAIT on its addresses slow every connect
            # made from them, whichever system is measured next.
            cfg["source"] = f"127.0.0.{self.a.source_base + i}"
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                SELF,
                "--shard",
                json.dumps(cfg),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=1 << 26,
            )
            h = ShardHandle(proc)
            h.task = asyncio.get_running_loop().create_task(h.reader(self))
            hello = await asyncio.wait_for(h.replies.get(), 30)
            if hello.get("ev") != "hello":
                raise RuntimeError(f"shard failed to start: {hello}")
            self.shards.append(h)

    async def start_publisher(self):
        cmd = json.loads(self.a.publisher_cmd)
        env = dict(os.environ)
        env.update(json.loads(self.a.publisher_env or "{}"))
        self.pub = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=self.a.publisher_cwd or None,
            env=env,
        )
        line = await asyncio.wait_for(self.pub.stdout.readline(), 120)
        if not line.startswith(b"READY"):
            raise RuntimeError("publisher did not start: " + line.decode(errors="replace").strip())

    async def publish(self, seq):
        self.pub.stdin.write(f"P {seq} {self.a.topic}\n".encode())
        await self.pub.stdin.drain()
        line = (await asyncio.wait_for(self.pub.stdout.readline(), 30)).decode().split(None, 3)
        if not line or line[0] != "OK":
            raise RuntimeError("publish failed: " + " ".join(line))
        return line[2], int(line[3])

    async def stop(self):
        for h in self.shards:
            try:
                h.proc.stdin.write(b'{"cmd": "quit"}\n')
                await h.proc.stdin.drain()
            except (ConnectionError, RuntimeError):
                pass
        for h in self.shards:
            try:
                await asyncio.wait_for(h.proc.wait(), 10)
            except asyncio.TimeoutError:
                h.proc.kill()
        if self.pub is not None:
            try:
                self.pub.stdin.write(b"Q\n")
                await self.pub.stdin.drain()
                await asyncio.wait_for(self.pub.wait(), 10)
            except (asyncio.TimeoutError, ConnectionError):
                self.pub.kill()

    # ---- measurements
    def loader_cpu(self):
        return sum(procfs.cpu_seconds(h.pid) for h in self.shards)

    def redis_cpu(self):
        return procfs.cpu_seconds(self.a.redis_pid) if self.a.redis_pid else 0.0

    async def wait_idle(self, max_s=15.0, window=0.25, threshold=0.05):
        """Until the server tree uses < threshold of a core for two windows."""
        t_end = time.monotonic() + max_s
        calm = 0
        prev = procfs.tree_cpu_seconds(self.a.server_pid)
        while time.monotonic() < t_end:
            await asyncio.sleep(window)
            cur = procfs.tree_cpu_seconds(self.a.server_pid)
            calm = calm + 1 if (cur - prev) / window < threshold else 0
            prev = cur
            if calm >= 2:
                return True
        return False

    async def health_count(self, key):
        """Optional: ask the server how many streams/polls it has registered
        (ours: GET /events/health/ -> {"streams": n, "polls": n})."""
        if not self.a.health_path:
            return None
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(HOST, self.a.port), 5)
            w.write(f"GET {self.a.health_path} HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode())
            data = await asyncio.wait_for(r.read(), 10)
            w.close()
            return int(json.loads(data.split(b"\r\n\r\n", 1)[1])[key])
        except (OSError, ValueError, KeyError, IndexError, asyncio.TimeoutError):
            return None

    async def wait_registered(self, key, n, max_s):
        """Until the server reports n registered clients (if it can tell), bounded."""
        t_end = time.monotonic() + max_s
        got = None
        while time.monotonic() < t_end:
            got = await self.health_count(key)
            if got is None or got >= n:
                return got
            await asyncio.sleep(0.25)
        self.log(f"server reports {got} {key} of {n} after {max_s:.0f} s")
        return got

    async def counts(self):
        replies = await asyncio.gather(*(h.call({"cmd": "counts"}, 30) for h in self.shards))
        return {k: sum(r[k] for r in replies) for k in ("comments", "waiting", "rearmed")}

    async def wait_waiting(self, n, max_s):
        """Until n polls wait in the loader (re-armed and written), bounded."""
        t_end = time.monotonic() + max_s
        waiting = 0
        while time.monotonic() < t_end:
            waiting = (await self.counts())["waiting"]
            if waiting >= n:
                break
            await asyncio.sleep(0.02)
        return waiting

    async def idle_cpu(self, n):
        """Server CPU with n idle streams over --idle-seconds (heartbeats only), and heartbeats seen."""
        c0 = (await self.counts())["comments"]
        s0 = procfs.tree_cpu_seconds(self.a.server_pid)
        t0 = time.monotonic()
        await asyncio.sleep(self.a.idle_seconds)
        s1 = procfs.tree_cpu_seconds(self.a.server_pid)
        wall = time.monotonic() - t0
        c1 = (await self.counts())["comments"]
        res = {
            "streams": n,
            "seconds": round(wall, 2),
            "server_cpu_s": round(s1 - s0, 3),
            "cpu_pct_of_core": round((s1 - s0) / wall * 100, 2),
            "heartbeats_received": c1 - c0,
        }
        self.log(f"idle N={n}: server {res['cpu_pct_of_core']} % of a core, {res['heartbeats_received']} heartbeats")
        return res

    def redis_connections(self):
        """Connections the server tree holds to Redis: by its sockets (/proc),
        cross-checked against Redis' CLIENT LIST."""
        if not self.a.redis_port:
            return {"proc": 0, "client_list": None}
        per = procfs.tree_tcp_connections(self.a.server_pid, self.a.redis_port)
        ports = {p for ps in per.values() for p in ps}
        listed = None
        try:
            import redis

            r = redis.Redis(host=HOST, port=self.a.redis_port, socket_timeout=10)
            clients = r.client_list()
            listed = sum(1 for c in clients if int(c["addr"].rsplit(":", 1)[1]) in ports)
            r.close()
        except Exception as e:
            self.log("CLIENT LIST failed:", e)
        return {"proc": len(ports), "client_list": listed, "per_process": {str(k): len(v) for k, v in per.items() if v}}

    def server_snapshot(self):
        pids = procfs.tree_pids(self.a.server_pid)
        return {
            "rss": sum(procfs.rss_bytes(p) for p in pids),
            "threads": {str(p): procfs.threads(p) for p in pids},
            "pids": pids,
        }

    # ---- scenario pieces
    async def open_streams(self, n, mode):
        per = [n // len(self.shards) + (1 if i < n % len(self.shards) else 0) for i in range(len(self.shards))]
        rate = self.a.rate / len(self.shards)
        conc = max(1, self.a.concurrency // len(self.shards))
        timeout = self.a.setup_timeout + n / self.a.min_setup_rate
        timeout = max(10.0, min(timeout, self.remaining()))
        coros = [
            h.call(
                {"cmd": "open", "n": k, "rate": rate, "concurrency": conc, "timeout": timeout, "mode": mode},
                timeout + 30,
            )
            for h, k in zip(self.shards, per, strict=True)
            if k > 0
        ]
        replies = await asyncio.gather(*coros)
        ok = sum(r["ok"] for r in replies)
        errors = Counter()
        for r in replies:
            errors.update(r["errors"])
        t0 = min(r["t0"] for r in replies if "t0" in r) if replies else 0
        tl = max(r["t_last"] for r in replies if "t_last" in r) if replies else 0
        wall = (tl - t0) / 1e9 if tl > t0 else 0.0
        return {
            "requested": n,
            "ok": ok,
            "failed": n - ok,
            "errors": dict(errors),
            "wall_s": round(wall, 3),
            "rate_per_s": round(ok / wall, 1) if wall > 0 else None,
            "setup_p50_ms": max((r.get("setup_p50_ms") or 0) for r in replies) if replies else None,
            "setup_p99_ms": max((r.get("setup_p99_ms") or 0) for r in replies) if replies else None,
        }

    async def one_publish(self, timeout):
        seq = self.seq
        self.seq += 1
        ev = self.done_ev[seq] = asyncio.Event()
        targets = await asyncio.gather(*(h.call({"cmd": "expect", "seq": seq}, 30) for h in self.shards))
        for h, t in zip(self.shards, targets, strict=True):
            if t["done"]:
                self.on_done(h, seq)
        expected = sum(t["target"] for t in targets)
        ident, call_us = await self.publish(seq)
        complete = True
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except asyncio.TimeoutError:
            complete = False
        del self.done_ev[seq]
        return {"seq": seq, "expected": expected, "id": ident, "publish_call_us": call_us, "complete": complete}

    async def collect(self, pubs):
        seqs = [p["seq"] for p in pubs]
        stats = await asyncio.gather(*(h.call({"cmd": "stats", "seqs": seqs}, 60) for h in self.shards))
        agg = {"dups": 0, "invalid": Counter(), "lost": 0, "early": 0, "empty": 0, "alive": 0}
        lat = {s: [] for s in seqs}
        for st in stats:
            for k in ("dups", "lost", "early", "empty", "alive"):
                agg[k] += st[k]
            agg["invalid"].update(st["invalid"])
            for s, vals in st["lat"].items():
                lat[int(s)].extend(vals)
        for p in pubs:
            vals = sorted(lat[p["seq"]])
            p["delivered"] = len(vals)
            ms = [
                None if v is None else v / 1e6
                for v in (pct(vals, 0.0001), pct(vals, 0.5), pct(vals, 0.99), vals[-1] if vals else None)
            ]
            p["first_ms"], p["p50_ms"], p["p99_ms"], p["last_ms"] = [round(x, 3) if x is not None else None for x in ms]
            p["within_1s"] = sum(1 for v in vals if v <= 1_000_000_000)
        agg["invalid"] = dict(agg["invalid"])
        return agg

    async def publish_phase(self, n_expected):
        """K publishes, one at a time; returns per-publish records + CPU."""
        fan_timeout = self.a.fanout_timeout + n_expected / 1000.0
        self.log(f"publish phase N={n_expected} start")
        s0 = procfs.tree_cpu_seconds(self.a.server_pid)
        r0, l0 = self.redis_cpu(), self.loader_cpu()
        t0 = time.monotonic()
        pubs = []
        timeouts = 0
        k = self.a.publishes if n_expected > 1000 else self.a.publishes * 2
        for i in range(k):
            if i >= 3 and time.monotonic() - t0 > self.a.phase_budget:
                self.log(f"publish phase over {self.a.phase_budget:.0f} s: stopping after {i} publishes")
                break
            p = await self.one_publish(fan_timeout)
            pubs.append(p)
            if not p["complete"]:
                timeouts += 1
                if timeouts >= 2:
                    self.log("two incomplete fan-outs: stopping this level")
                    break
            await asyncio.sleep(self.a.gap)
        self.log(f"publish phase N={n_expected} end")
        # let stragglers arrive before counting (bounded)
        await asyncio.sleep(0.2)
        wall = time.monotonic() - t0
        cpu = {
            "server_s": procfs.tree_cpu_seconds(self.a.server_pid) - s0,
            "redis_s": self.redis_cpu() - r0,
            "loader_s": self.loader_cpu() - l0,
            "wall_s": wall,
        }
        return pubs, cpu

    async def sse_levels(self):
        results = []
        # warm-up: a few streams and publishes so lazy imports, the hub and pools exist
        await self.open_streams(min(10, self.a.levels[0]), "sse")
        for _ in range(2):
            await self.one_publish(10)
        await asyncio.gather(*(h.call({"cmd": "close"}, 30) for h in self.shards))
        await self.collect([])
        await asyncio.sleep(0.5)
        await self.wait_idle()
        base = self.server_snapshot()
        base_redis = self.redis_connections()
        self.log("baseline rss MB", round(base["rss"] / 2**20, 1), "threads", base["threads"])
        current = 0
        for n in self.a.levels:
            if self.remaining() < 15:
                self.log(f"time budget ({self.a.budget:.0f} s) used up: level {n} skipped")
                results.append({"n": n, "error": "skipped: time budget used up", "setup": {}})
                break
            self.log(f"opening {n - current} streams (to {n})")
            setup = await self.open_streams(n - current, "sse")
            current += setup["ok"]
            self.log("setup", setup)
            idle_ok = await self.wait_idle()
            registered = await self.wait_registered("streams", current, 60)
            if registered is not None and registered < current:
                idle_ok = await self.wait_idle()
            snap = self.server_snapshot()
            redis_conns = self.redis_connections()
            accepted = procfs.tree_accepted_connections(self.a.server_pid, self.a.port)
            level = {
                "n": n,
                "streams_open": current,
                "setup": setup,
                "idle_reached": idle_ok,
                "server_registered": registered,
                "rss_before": base["rss"],
                "rss_after": snap["rss"],
                "rss_per_stream_kb": round((snap["rss"] - base["rss"]) / max(1, current) / 1024, 2),
                "threads_before": base["threads"],
                "threads": snap["threads"],
                "threads_max": max(snap["threads"].values()) if snap["threads"] else None,
                "redis_connections": redis_conns,
                "redis_connections_baseline": base_redis,
                "streams_per_process": {str(k): v for k, v in accepted.items() if v},
            }
            if current == 0:
                level["error"] = "no stream could be opened"
                results.append(level)
                break
            if self.a.idle_seconds > 0 and n == (self.a.idle_at or max(self.a.levels)):
                level["idle"] = await self.idle_cpu(current)
            pubs, cpu = await self.publish_phase(current)
            agg = await self.collect(pubs)
            delivered = sum(p["delivered"] for p in pubs)
            expected = sum(p["expected"] for p in pubs)
            lasts = [p["last_ms"] for p in pubs if p["complete"]]
            level.update(
                {
                    "publishes": pubs,
                    "delivered": delivered,
                    "expected": expected,
                    "duplicated": agg["dups"],
                    "invalid": agg["invalid"],
                    "lost_streams": agg["lost"],
                    "alive_after": agg["alive"],
                    "complete_publishes": sum(1 for p in pubs if p["complete"]),
                    "first_ms": median([p["first_ms"] for p in pubs]),
                    "p50_ms": median([p["p50_ms"] for p in pubs]),
                    "p99_ms": median([p["p99_ms"] for p in pubs]),
                    "fanout_ms": median(lasts) if lasts else None,
                    "fanout_max_ms": max(lasts) if lasts else None,
                    "cpu": cpu,
                    "server_us_per_msg": round(cpu["server_s"] / delivered * 1e6, 2) if delivered else None,
                    "redis_us_per_msg": round(cpu["redis_s"] / delivered * 1e6, 2) if delivered else None,
                    "loader_us_per_msg": round(cpu["loader_s"] / delivered * 1e6, 2) if delivered else None,
                    "throughput_msgs_per_s": round(delivered / (sum(lasts) / 1000), 0) if lasts else None,
                }
            )
            self.log(
                f"N={n}: fan-out median {level['fanout_ms']} ms, delivered {delivered}/{expected},"
                f" server {level['server_us_per_msg']} us/msg, rss/stream {level['rss_per_stream_kb']} KB,"
                f" threads {level['threads_max']}, redis conns {redis_conns['proc']}"
            )
            results.append(level)
            failed = setup["failed"] + (expected - delivered) + agg["dups"] + sum(agg["invalid"].values())
            if setup["ok"] == 0 or (setup["failed"] > 0.05 * setup["requested"]) or not lasts:
                self.log("stopping the ramp: too many failures")
                break
            if failed and self.a.stop_on_failure:
                break
        await asyncio.gather(*(h.call({"cmd": "close"}, 60) for h in self.shards))
        return results

    async def poll_level(self):
        n = self.a.levels[0]
        # warm-up: one poll answered by one publish
        await self.open_streams(min(10, n), "poll")
        await asyncio.sleep(0.5)
        await self.one_publish(10)
        await self.collect([])
        await self.wait_idle()
        base = self.server_snapshot()
        setup = await self.open_streams(n, "poll")
        self.log("poll setup", setup)
        await asyncio.sleep(0.5)
        idle_ok = await self.wait_idle(max_s=60)
        registered = await self.wait_registered("polls", setup["ok"], 60)
        if registered is not None:
            self.log(f"server reports {registered} polls waiting")
        snap = self.server_snapshot()
        # Rounds: publish, every poll is answered and at once asks again
        # (continuing after its answer); the next publish waits until all N
        # wait again. Round 1 is also the "all answered" measurement.
        rounds = max(1, self.a.poll_rounds)
        await asyncio.gather(*(h.call({"cmd": "rearm", "on": rounds > 1}, 30) for h in self.shards))
        pubs, cpu = [], {}
        s0 = procfs.tree_cpu_seconds(self.a.server_pid)
        t0 = time.monotonic()
        rearm_ms = []
        for r in range(rounds):
            p = await self.one_publish(self.a.fanout_timeout + n / 200)
            pubs.append(p)
            if r == rounds - 1 or rounds == 1:
                break
            t_answered = time.monotonic()
            waiting = await self.wait_waiting(n, self.a.fanout_timeout + n / 200)
            if waiting < n:
                self.log(f"round {r + 1}: only {waiting} of {n} polls asked again")
            registered = await self.wait_registered("polls", waiting, 60)
            if registered is None:
                await self.wait_idle(max_s=10, window=0.1)
            rearm_ms.append(round((time.monotonic() - t_answered) * 1000, 1))
        await asyncio.gather(*(h.call({"cmd": "rearm", "on": False}, 30) for h in self.shards))
        if rounds > 1:
            # The last round's answers also ask again: count that work too.
            await self.wait_waiting(n, self.a.fanout_timeout + n / 200)
            if await self.wait_registered("polls", n, 60) is None:
                await self.wait_idle(max_s=10, window=0.1)
        await asyncio.sleep(0.2)
        cpu["server_s"] = procfs.tree_cpu_seconds(self.a.server_pid) - s0
        cpu["wall_s"] = time.monotonic() - t0
        agg = await self.collect(pubs)
        answered = sum(q["delivered"] for q in pubs)
        poll_rounds = {
            "rounds": len(pubs),
            "expected": n * len(pubs),
            "answered": answered,
            "missing": n * len(pubs) - answered,
            "server_ms_per_poll": round(cpu["server_s"] / answered * 1e3, 3) if answered else None,
            "rearm_ms": rearm_ms,
            "round_all_answered_ms": [q["last_ms"] if q["complete"] else None for q in pubs],
        }
        p = pubs[0]
        res = {
            "n": n,
            "mode": "poll",
            "setup": setup,
            "idle_reached": idle_ok,
            "server_registered": registered,
            "rss_per_poll_kb": round((snap["rss"] - base["rss"]) / max(1, setup["ok"]) / 1024, 2),
            "threads": snap["threads"],
            "threads_max": max(snap["threads"].values()) if snap["threads"] else None,
            "publishes": pubs,
            "delivered": p["delivered"],
            "expected": p["expected"],
            "answered_within_1s": p["within_1s"],
            "all_answered_ms": p["last_ms"] if p["complete"] else None,
            "p50_ms": p["p50_ms"],
            "p99_ms": p["p99_ms"],
            "early_answers": agg["early"],
            "lost": agg["lost"],
            "empty_answers": agg["empty"],
            "duplicated": agg["dups"],
            "invalid": agg["invalid"],
            "cpu": cpu,
            "poll_rounds": poll_rounds,
        }
        self.log(
            f"poll N={n} x {len(pubs)} rounds: {answered}/{n * len(pubs)} answered,"
            f" server {poll_rounds['server_ms_per_poll']} ms per answer and re-arm"
        )
        self.log(
            f"poll N={n}: all answered in {res['all_answered_ms']} ms,"
            f" {p['delivered']}/{p['expected']}, within 1 s {p['within_1s']}"
        )
        await asyncio.gather(*(h.call({"cmd": "close"}, 60) for h in self.shards))
        return [res]

    async def run(self):
        nofile = procfs.raise_nofile()
        per_shard = max(1000, min(self.a.per_shard, nofile - 200))
        n_shards = max(1, math.ceil(max(self.a.levels) / per_shard))
        await self.start_shards(n_shards)
        self.log(f"{n_shards} shard(s), pids {[h.pid for h in self.shards]}")
        await self.start_publisher()
        try:
            if self.a.mode == "sse":
                levels = await self.sse_levels()
            else:
                levels = await self.poll_level()
        finally:
            await self.stop()
        return {
            "system": self.a.system,
            "mode": self.a.mode,
            "port": self.a.port,
            "loader_shards": n_shards,
            "levels": levels,
        }


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shard", help=argparse.SUPPRESS)
    ap.add_argument("--system", choices=sorted(PROFILES), default="ours")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--server-pid", type=int, help="root pid of the server process tree")
    ap.add_argument("--redis-port", type=int, default=0, help="to count the server's Redis connections")
    ap.add_argument("--redis-pid", type=int, default=0, help="to report Redis CPU")
    ap.add_argument("--mode", choices=["sse", "poll"], default="sse")
    ap.add_argument("--levels", default="1000", help="stream counts, ascending: 1000,5000,10000")
    ap.add_argument("--publishes", type=int, default=10, help="publishes per level (x2 at N<=1000)")
    ap.add_argument("--gap", type=float, default=0.05, help="seconds between publishes")
    ap.add_argument("--rate", type=float, default=5000, help="connection attempts per second")
    ap.add_argument("--concurrency", type=int, default=1000, help="max handshakes in flight")
    ap.add_argument(
        "--setup-timeout", type=float, default=20.0, help="seconds to set up a level, plus N / --min-setup-rate"
    )
    ap.add_argument(
        "--min-setup-rate", type=float, default=100.0, help="streams/s below which a level's set-up is cut short"
    )
    ap.add_argument(
        "--budget", type=float, default=600.0, help="seconds for the whole ramp: no new level starts after it"
    )
    ap.add_argument(
        "--phase-budget", type=float, default=15.0, help="seconds of publishing per level (at least 3 publishes)"
    )
    ap.add_argument("--poll-rounds", type=int, default=1, help="long-poll: publishes, each re-arming every poll")
    ap.add_argument(
        "--idle-seconds", type=float, default=0, help="measure CPU with idle streams for this long (0: not)"
    )
    ap.add_argument("--idle-at", type=int, default=0, help="level for the idle measurement (default: the largest)")
    ap.add_argument("--fanout-timeout", type=float, default=10.0, help="seconds (+1 ms per stream)")
    ap.add_argument("--per-shard", type=int, default=15000, help="max connections per load process")
    ap.add_argument("--topic", default="bench")
    ap.add_argument(
        "--source-base",
        type=int,
        default=2,
        help="the shards connect from 127.0.0.<base>, <base + 1>, ... (bench/run.py gives each run its own)",
    )
    ap.add_argument(
        "--health-path",
        default="",
        help="JSON endpoint with 'streams'/'polls' counts, to wait until all are registered",
    )
    ap.add_argument("--stop-on-failure", action="store_true")
    ap.add_argument("--publisher-cmd", required=False, help="JSON list: the publisher command")
    ap.add_argument("--publisher-env", default="{}", help="JSON object added to the environment")
    ap.add_argument("--publisher-cwd", default="")
    ap.add_argument("--out", help="write the JSON result here (else stdout)")
    a = ap.parse_args(argv)
    if a.shard is None:
        a.levels = [int(x) for x in a.levels.split(",") if x]
        if a.server_pid is None or not a.publisher_cmd:
            ap.error("--server-pid and --publisher-cmd are required")
    return a


def main(argv=None):
    a = parse_args(argv)
    if a.shard is not None:
        shard_main(json.loads(a.shard))
        return 0
    if uvloop is not None:
        uvloop.install()
    res = asyncio.run(Coordinator(a).run())
    text = json.dumps(res, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
