"""The benchmark's quick mode runs end to end and prints every figure.

No timing threshold here: the numbers depend on the machine and on what else
runs on it. This only guards the command the README documents.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FIGURES = (
    "publish_ratio_vs_raw",
    "publish_ratio_vs_flush_per_write",
    "http_user_route_ratio",
    "http_user_route_floor_ratio",
    "http_vs_reference_server",
    "http_method_route_rps",
    "http_method_route_rps_sqlite",
    "http_method_cpu_ratio",
    "http_method_cpu_floor_ratio",
    "http_method_p50_vs_command_rtt",
    "read_after_write_p50_ms",
    "command_rtt_p50_ms",
    "command_rtt_p99_ms",
    "command_rtt_ratio_p50",
    "command_rtt_floor_ratio",
    "consumer_foreign_records",
    "worker_boot_ms",
    "worker_rss_mb",
    "publish_scaling_1000_attrs",
)


def test_quick_bench_prints_every_figure(tmp_path: Path) -> None:
    results = tmp_path / "results.txt"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-6000:]}"
    lines = proc.stdout.splitlines()
    values = dict(line.split(": ", 1) for line in lines if line.split(": ", 1)[0] in FIGURES)
    assert sorted(values) == sorted(FIGURES), proc.stdout
    for value in values.values():
        float(value)  # a plain number, never "error"
    assert "HTTP load generator: " in proc.stdout
    assert results.read_text(encoding="utf-8") == proc.stdout


def test_a_slice_counts_as_lopsided_only_when_one_worker_sat_it_out() -> None:
    from bench.web import _lopsided
    from harness.measured_gunicorn import Server

    class TwoWorkers(Server):
        def worker_processes(self) -> list[int]:
            return [11, 12]

    class OneProcess(Server):
        def worker_processes(self) -> list[int]:
            return []

    before = {10: 0.0, 11: 1.0, 12: 1.0}
    alone = {10: 0.01, 11: 4.9, 12: 1.05}  # the master aside, worker 12 served nothing but its background
    shared = {10: 0.01, 11: 3.2, 12: 2.9}
    uneven = {10: 0.01, 11: 4.0, 12: 2.0}  # 6 connections to 2: both serve, it is measured as is
    assert _lopsided(TwoWorkers(), before, alone)
    assert not _lopsided(TwoWorkers(), before, shared)
    assert not _lopsided(TwoWorkers(), before, uneven)
    assert not _lopsided(OneProcess(), {10: 0.0}, {10: 5.0})
