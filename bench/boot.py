"""Figures worker_boot_ms (fresh interpreters) and the probe runner."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field

from harness.measured_gunicorn import ext_env
from harness.progress import log
from harness.scratch import scratch_dir

from .common import BENCH_DIR, ROOT, Broker


@dataclass
class BootResult:
    ext_ms: list[float] = field(default_factory=list)
    plain_ms: list[float] = field(default_factory=list)


def _probe(kind: str, env: dict[str, str]) -> float:
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "boot_probe.py"), kind], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"boot probe {kind} failed: {proc.stderr[-2000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    if kind == "ext" and not data["owns_commands"]:
        raise RuntimeError("boot probe: the runtime did not take the command log")
    return float(data["ms"])


def run_boot(broker: Broker, topic: str, *, runs: int) -> BootResult:
    """A warm-up probe of each kind (disk cache, bytecode), then ``runs`` alternating probes.

    Each ext probe takes the command log (fresh lock directory), the costlier
    of a worker's two roles. The probes keep their bytecode under a cache of
    this run, written by the warm-up: an installed package has its bytecode
    from ``pip install``, but this checkout is an editable install, and with
    ``PYTHONDONTWRITEBYTECODE`` set (as the container images set it) every
    probe compiled the package's sources again (about 100 ms here), which no
    deployed worker does.
    """
    result = BootResult()
    bytecode = scratch_dir("bytecode-")
    for i in range(runs + 1):
        env = ext_env(broker.bootstrap, topic, "BENCH-BOOT", scratch_dir("locks-"))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = bytecode
        ext = _probe("ext", env)
        plain = _probe("plain", env)
        if i == 0:
            continue
        result.ext_ms.append(ext)
        result.plain_ms.append(plain)
        log(f"boot probe {i}/{runs}: extension {ext:.0f} ms, plain {plain:.0f} ms")
    return result
