"""Small /proc readers used by the benchmark (Linux only, no dependencies).

Everything here measures a *process tree*: a server such as
``uvicorn --workers 2`` or nginx is a supervisor plus worker processes, and
the benchmark reports the sum over all of them.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import subprocess
import sys

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _ppid_map() -> dict[int, int]:
    out: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        # the command name may contain spaces and parentheses: split after the last ')'
        rest = data[data.rindex(b")") + 2 :].split()
        out[int(name)] = int(rest[1])
    return out


def tree_pids(root: int) -> list[int]:
    """root and all its descendants (processes, not threads)."""
    ppid = _ppid_map()
    children: dict[int, list[int]] = {}
    for pid, parent in ppid.items():
        children.setdefault(parent, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in ppid or pid == root:
            out.append(pid)
        todo.extend(children.get(pid, ()))
    return [p for p in out if os.path.exists(f"/proc/{p}")]


def cpu_seconds(pid: int) -> float:
    """user+system CPU seconds of one process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0.0
    rest = data[data.rindex(b")") + 2 :].split()
    # fields 14 and 15 of stat(5) are utime, stime; rest starts at field 3
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def tree_cpu_seconds(root: int) -> float:
    return sum(cpu_seconds(p) for p in tree_pids(root))


def status_fields(pid: int) -> dict[str, str]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except OSError:
        pass
    return out


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (VmRSS)."""
    v = status_fields(pid).get("VmRSS", "0 kB").split()[0]
    return int(v) * 1024


def tree_rss_bytes(root: int) -> int:
    return sum(rss_bytes(p) for p in tree_pids(root))


def threads(pid: int) -> int:
    return int(status_fields(pid).get("Threads", "0"))


def tree_threads(root: int) -> dict[int, int]:
    return {p: threads(p) for p in tree_pids(root)}


def socket_inodes(pid: int) -> set[int]:
    out = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def _tcp_table() -> list[tuple[int, int, int, int]]:
    """(local_port, remote_port, state, inode) for every IPv4/IPv6 TCP socket."""
    rows = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    lport = int(parts[1].rsplit(":", 1)[1], 16)
                    rport = int(parts[2].rsplit(":", 1)[1], 16)
                    rows.append((lport, rport, int(parts[3], 16), int(parts[9])))
        except OSError:
            pass
    return rows


ESTABLISHED = 1


def tree_tcp_connections(root: int, remote_port: int) -> dict[int, list[int]]:
    """Per process of the tree: local ports of its established TCP connections
    to ``remote_port`` (e.g. the Redis port). Loopback only, so the local port
    identifies the connection in Redis' CLIENT LIST."""
    table = _tcp_table()
    by_inode = {ino: (lp, rp, st) for lp, rp, st, ino in table}
    out: dict[int, list[int]] = {}
    for pid in tree_pids(root):
        ports = []
        for ino in socket_inodes(pid):
            row = by_inode.get(ino)
            if row and row[1] == remote_port and row[2] == ESTABLISHED:
                ports.append(row[0])
        out[pid] = ports
    return out


def tree_accepted_connections(root: int, listen_port: int) -> dict[int, int]:
    """Per process: number of established connections accepted on listen_port."""
    table = _tcp_table()
    by_inode = {ino: (lp, st) for lp, rp, st, ino in table}
    out = {}
    for pid in tree_pids(root):
        n = 0
        for ino in socket_inodes(pid):
            row = by_inode.get(ino)
            if row and row[0] == listen_port and row[1] == ESTABLISHED:
                n += 1
        out[pid] = n
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def machine_description() -> dict[str, str]:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    try:
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
    except OSError:
        load = ["?"]
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "kernel": platform.release(),
        "os": _os_release(),
        "python": sys.version.split()[0],
        "loadavg at start": " ".join(load),
    }


def _os_release() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


def cmd_version(args: list[str], pattern: str = r"\d+\.\d+[\w.\-]*") -> str:
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    m = re.search(pattern, p.stdout + p.stderr)
    return m.group(0) if m else "?"


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE as far as allowed: the hard limit too, up to fs.nr_open (at most 2**20),
    where the process may (root with CAP_SYS_RESOURCE); else the soft limit to the hard one.
    Returns the soft limit now. Children (worker, nginx, loader) inherit it."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    try:
        with open("/proc/sys/fs/nr_open") as f:
            ceiling = min(int(f.read()), 1 << 20)
    except (OSError, ValueError):
        ceiling = hard
    for limit in (max(ceiling, hard), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
