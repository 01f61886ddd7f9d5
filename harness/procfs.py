"""Processes and ports seen from outside: free ports, children, liveness, flock holders, RSS.

Read from ``/proc`` (no psutil here) by the gunicorn runners of the tests and
the benchmarks alike; every process is found by a pid someone started.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

__all__ = ["alive", "children_of", "connections_to", "flock_holders", "free_port", "is_gunicorn", "rss_mb"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])



def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name is in parentheses and may contain spaces: split after the last ')'
    return text[text.rfind(")") + 2:].split()


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (scans /proc: no psutil here), zombies excluded."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields and fields[1] == str(pid) and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


def alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def is_gunicorn(pid: int) -> bool:
    try:
        return b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def flock_holders(path: str | Path) -> list[int]:
    """Pids holding a ``flock`` on ``path``, read from /proc/locks."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return []
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = []
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 28706 fe:00:2156497 0 EOF"; blocked waiters are marked "->"
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == device:
            holders.append(int(parts[4]))
    return holders


def connections_to(pid: int, port: int) -> int:
    """Established TCP connections of ``pid`` to a loopback ``port``: its socket fds matched in /proc/net/tcp."""
    sockets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed while listed
            continue
        if target.startswith("socket:["):
            sockets.add(target[8:-1])
    count = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()  # sl local remote state ... inode (10th)
        if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] == "01" and fields[9] in sockets:
            count += 1
    return count


def rss_mb(pid: int) -> float:
    """Resident set size from /proc (VmRSS), in MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")
