"""``python -m bench [--quick]``: every figure next to its baseline, in one run.

``python -m bench --soak [--minutes N]`` runs the soak instead (harness/soak.py):
steady load under gunicorn, each worker's memory, threads and descriptors.

Starts its own Tansu broker (restarted between parts: it keeps every record
in memory), runs the parts, prints a table and one ``name: value`` line per
figure, and writes the same text to a results file. A part that fails does
not hide the others: its figures print as ``error`` and the exit code is 1.
Goals are shown, never enforced.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.measured_gunicorn import shipped_gunicorn
from harness.progress import log
from harness.scratch import unique_name

from .common import BENCH_DIR, Broker, code_version, cpu_seconds, load_average, machine, wrk_path, wrk_version

FIGURES = (
    "publish_ratio_vs_raw",
    "publish_ratio_vs_flush_per_write",
    "publish_floor_ratio",
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


@dataclass(frozen=True)
class Mode:
    name: str
    publish_records: int
    flush_records: int
    publish_rounds: int
    scaling_records: int
    scaling_rounds: int
    flood_seconds: float
    http_slices: int
    http_slice_seconds: int
    http_method_slices: int
    http_method_seconds: int
    http_warmup: int
    connections: int
    rtt_samples: int
    rtt_warmup: int
    rtt_block: int
    boot_runs: int


QUICK = Mode(
    "quick",
    publish_records=10_000, flush_records=300, publish_rounds=3,
    scaling_records=8_000, scaling_rounds=3,
    flood_seconds=3,
    http_slices=4, http_slice_seconds=1, http_method_slices=1, http_method_seconds=2, http_warmup=1, connections=8,
    rtt_samples=100, rtt_warmup=10, rtt_block=100,
    boot_runs=2,
)
FULL = Mode(
    "full",
    publish_records=40_000, flush_records=1_000, publish_rounds=9,
    scaling_records=30_000, scaling_rounds=9,
    flood_seconds=8,
    http_slices=16, http_slice_seconds=2, http_method_slices=3, http_method_seconds=2, http_warmup=2, connections=8,
    rtt_samples=1_000, rtt_warmup=10, rtt_block=200,
    boot_runs=5,
)


@dataclass
class Figure:
    name: str
    value: float | None
    kind: str  # ratio | rps | ms | mb | count
    baseline: str
    goal: str
    meets: Callable[[float], bool] | None = None

    def text(self) -> str:
        if self.value is None:
            return "error"
        return fmt(self.value, self.kind)

    def verdict(self) -> str:
        if self.value is None:
            return "✗"
        if self.meets is None:
            return "—"
        return "✓" if self.meets(self.value) else "✗"


def fmt(value: float, kind: str) -> str:
    """Plain numbers: ratios to 3 significant digits, times and sizes to 0.1."""
    if kind == "ratio":
        return f"{value:.0f}" if abs(value) >= 99.95 else f"{value:#.3g}"
    if kind in ("rps", "count"):
        return f"{value:.0f}"
    return f"{value:.1f}"


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def paired(ours: list[float], baseline: list[float]) -> float:
    """Median of per-round ratios: each pair ran seconds apart, under the same machine load."""
    return median([a / b for a, b in zip(ours, baseline, strict=True)])


def rates(samples: list[Any]) -> list[float]:
    return [sample.per_second for sample in samples]


def cpu_us(samples: list[Any]) -> str:
    return f"{median([sample.cpu_us for sample in samples]):.1f} µs"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: a p99 of 100 samples is the 99th)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


class Run:
    """Runs the parts in order and collects their raw results (or their errors)."""

    def __init__(self, mode: Mode, loadgen: str) -> None:
        self.mode = mode
        self.raw: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        wrk = wrk_path() if loadgen in ("auto", "wrk") else None
        if loadgen == "wrk" and wrk is None:
            raise SystemExit("--loadgen wrk: wrk is not installed (apt-get install -y wrk)")
        self.wrk = wrk
        self.loadgen = f"{wrk_version(wrk)} (-t1 -c{mode.connections})" if wrk else (
            f"Python load generator in bench/loadgen.py (2 processes, {mode.connections} connections; wrk not "
            "installed)" if loadgen == "auto" else
            f"Python load generator in bench/loadgen.py (2 processes, {mode.connections} connections; forced)")

        self.load_before = load_average()
        self.code = self.code_after = code_version()
        self.others_cpu = 0.0
        self.capacity = 0.0

    def part(self, name: str, func: Callable[[], Any]) -> None:
        started = time.monotonic()
        log(f"part {name}: start")
        try:
            self.raw[name] = func()
        except Exception as exc:  # report the others anyway
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            log(f"part {name} FAILED:\n{traceback.format_exc()}")
        log(f"part {name}: {time.monotonic() - started:.1f}s")

    def execute(self) -> None:
        from .boot import run_boot
        from .foreign import run_foreign
        from .publish import run_publish, run_scaling
        from .rtt import run_rtt
        from .web import run_web

        m = self.mode
        broker = Broker()
        busy0, ours0 = cpu_seconds()
        started = time.monotonic()
        try:
            broker.start()
            self.part("publish", lambda: run_publish(broker, records=m.publish_records,
                                                     flush_records=m.flush_records, rounds=m.publish_rounds))
            self.part("scaling", lambda: run_scaling(broker, records=m.scaling_records, rounds=m.scaling_rounds))
            broker.restart()
            self.part("foreign", lambda: run_foreign(broker, seconds=m.flood_seconds))
            self.part("web", lambda: run_web(broker, slices=m.http_slices, slice_seconds=m.http_slice_seconds,
                                             method_slices=m.http_method_slices,
                                             method_seconds=m.http_method_seconds, warmup=m.http_warmup,
                                             connections=m.connections, wrk=self.wrk))
            self.part("rtt", lambda: run_rtt(broker, samples=m.rtt_samples, warmup=m.rtt_warmup,
                                             block=m.rtt_block))
            broker.restart()
            self.part("boot", lambda: run_boot(broker, broker.create_topic(unique_name("bench-boot"), 8),
                                               runs=m.boot_runs))
        finally:
            broker.stop()
            busy1, ours1 = cpu_seconds()
            self.others_cpu = max(0.0, (busy1 - busy0) - (ours1 - ours0))
            self.code_after = code_version()
            self.capacity = (time.monotonic() - started) * (os.cpu_count() or 1)

    def figures(self) -> list[Figure]:
        figures: list[Figure] = []
        p = self.raw.get("publish")
        if p is not None:
            ours, raw, flush = (rates(p.ours), rates(p.raw), rates(p.flush_per_write))
            idle = rates(p.ours_idle_runtime)
            figures += [
                Figure("publish_ratio_vs_raw", paired(ours, raw), "ratio",
                       f"extension {median(ours):,.0f}/s vs raw async produce {median(raw):,.0f}/s, medians of "
                       f"{len(ours)} rounds; CPU per record {cpu_us(p.ours)} vs {cpu_us(p.raw)}; runtime not "
                       f"started (diagnostic) {median(idle):,.0f}/s, {cpu_us(p.ours_idle_runtime)}",
                       "≥ 0.6", lambda v: v >= 0.6),
                Figure("publish_floor_ratio", paired(rates(p.floor), raw), "ratio",
                       f"the least this design costs a record here: the raw producer with a hand-written "
                       f"follower tailing its partition in its process, the one reader of the executing worker "
                       f"(key and origin header; no decoding, state or checks) {median(rates(p.floor)):,.0f}/s, "
                       f"{cpu_us(p.floor)}, vs the raw producer alone", "report"),
                Figure("publish_ratio_vs_flush_per_write", paired(ours, flush), "ratio",
                       f"extension {median(ours):,.0f}/s vs flush per write {median(flush):,.0f}/s",
                       "≥ 40", lambda v: v >= 40),
            ]
        http = self.raw.get("web")
        if http is not None:
            ext_rps = [load.rps for load in http.ext_user]
            plain_rps = [load.rps for load in http.plain_user]
            ref_rps = [load.rps for load in http.ref_user]
            method = median([load.rps for load in http.ext_method])
            method_cpu, user_cpu = median(http.method_cpu_us), median(http.ext_cpu_us)
            variants = http.method_variants

            def variant(name: str) -> str:
                rps, cpu = variants[name]
                return f"{name} {rps:,.0f} req/s, {cpu:.0f} µs per call"
            figures += [
                Figure("http_user_route_ratio", paired(ext_rps, plain_rps), "ratio",
                       f"GET /hello: extension {median(ext_rps):,.0f} req/s vs plain Flask {median(plain_rps):,.0f} "
                       f"req/s, medians of {len(ext_rps)} alternating slices; server CPU per request "
                       f"{median(http.ext_cpu_us):.0f} µs vs {median(http.plain_cpu_us):.0f} µs; slices measured "
                       f"again because one worker served them (at most {http.lopsided_retries} times each): "
                       + ", ".join(f"{name} {http.lopsided.get(name, 0)}" for name in ("ext", "plain", "floor")),
                       "≥ 0.95", lambda v: v >= 0.95),
                Figure("http_user_route_floor_ratio", paired([load.rps for load in http.floor_user], plain_rps),
                       "ratio",
                       f"the least following the log costs a user route here: plain Flask whose workers each tail "
                       f"the asset's partition from boot with one consumer and a producer's poller, as the "
                       f"extension's do at rest (harness/raw_call.py, the same client settings, its own topic), "
                       f"{median([load.rps for load in http.floor_user]):,.0f} req/s, server CPU per request "
                       f"{median(http.floor_user_cpu_us):.0f} µs, vs plain Flask, same slices", "report"),
                Figure("http_vs_reference_server", paired(ext_rps, ref_rps), "ratio",
                       f"GET /hello: extension, shipped gunicorn config, {median(ext_rps):,.0f} req/s vs plain Flask "
                       f"on werkzeug make_server (single-threaded, as the reference serves) {median(ref_rps):,.0f} "
                       f"req/s; server CPU per request {user_cpu:.0f} µs vs {median(http.ref_cpu_us):.0f} µs"
                       + _reference_ceiling(http, user_cpu, median(ref_rps)),
                       "≥ 2.0", lambda v: v >= 2.0),
                Figure("http_method_route_rps", method, "rps",
                       f"POST /ofa/methods/ping (through the log) on Kafka, shipped gunicorn config, same load "
                       f"generator and settings, median of {len(http.ext_method)} slice(s) on a fresh broker; server "
                       f"CPU per call {method_cpu:.0f} µs; {variant('kafka, sync workers')}", "report"),
                Figure("http_method_route_rps_sqlite", variants["sqlite, shipped"][0], "rps",
                       f"the same on the embedded sqlite transport: {variant('sqlite, shipped')}; "
                       f"{variant('sqlite, sync workers')}", "report"),
                Figure("http_method_cpu_ratio", method_cpu / user_cpu, "ratio",
                       f"all server CPU per method call (master and workers, the executor's share included) "
                       f"{method_cpu:.0f} µs vs per user route request {user_cpu:.0f} µs (medians of slices)",
                       "≤ 2.5", lambda v: v <= 2.5),
                Figure("http_method_cpu_floor_ratio", median(http.floor_cpu_us) / user_cpu, "ratio",
                       f"the least the same design costs here: the same calls to a hand-written app "
                       f"(harness/raw_call.py: the log, one consumer per worker, no checks), same server and load, "
                       f"{median([load.rps for load in http.floor_method]):,.0f} req/s, "
                       f"{median(http.floor_cpu_us):.0f} µs per call, vs the same user route requests",
                       "report"),
                Figure("worker_rss_mb", http.ext_rss, "mb",
                       f"plain Flask worker {http.plain_rss:.1f} MB (largest of the 2 workers, after load)",
                       "≤ 60 MB", lambda v: v <= 60),
            ]
        rtt = self.raw.get("rtt")
        if rtt is not None:
            if rtt.command_ms and rtt.raw_ms:
                p50, p99 = percentile(rtt.command_ms, 50), percentile(rtt.command_ms, 99)
                raw50, raw99 = percentile(rtt.raw_ms, 50), percentile(rtt.raw_ms, 99)
                note = f" ({rtt.timeouts} timed out)" if rtt.timeouts else ""
                figures += [
                    Figure("command_rtt_p50_ms", p50, "ms",
                           f"raw produce->consume p50 {raw50:.1f} ms; {len(rtt.command_ms)} commands{note}", "report"),
                    Figure("command_rtt_p99_ms", p99 if not rtt.timeouts else float("inf"), "ms",
                           f"raw produce->consume p99 {raw99:.1f} ms", "≤ 30 ms", lambda v: v <= 30),
                    Figure("command_rtt_ratio_p50", p50 / raw50, "ratio",
                           f"{p50:.1f} ms vs raw {raw50:.1f} ms (a command is 2 hops)", "≤ 2.5", lambda v: v <= 2.5),
                ]
            if rtt.echo_ms and rtt.echo_raw_ms:
                echo50, hop50 = percentile(rtt.echo_ms, 50), percentile(rtt.echo_raw_ms, 50)
                figures.append(Figure(
                    "command_rtt_floor_ratio", echo50 / hop50, "ratio",
                    f"what this broker allows: a command answered by a raw echo with the extension's producer "
                    f"settings, p50 {echo50:.1f} ms vs raw hop {hop50:.1f} ms, interleaved, fresh brokers "
                    f"({len(rtt.echo_ms)} samples): the same ratio for an answer that takes no work at all; its "
                    f"raw hops run in partitions without the app's traffic", "report"))
            if rtt.http_call_ms and rtt.command_ms:
                call50, cmd50 = percentile(rtt.http_call_ms, 50), percentile(rtt.command_ms, 50)
                read50, health50 = percentile(rtt.read_ms, 50), percentile(rtt.health_ms, 50)
                failed = f"; {rtt.http_failures} failed" if rtt.http_failures else ""
                figures += [
                    Figure("http_method_p50_vs_command_rtt", call50 / cmd50, "ratio",
                           f"POST /ofa/methods/ping p50 {call50:.1f} ms (p99 {percentile(rtt.http_call_ms, 99):.1f}) "
                           f"vs command round trip p50 {cmd50:.1f} ms, interleaved, {len(rtt.http_call_ms)} "
                           f"calls{failed}", "≤ 1.2", lambda v: v <= 1.2),
                    Figure("read_after_write_p50_ms", read50, "ms",
                           f"GET /ofa/attributes/position_x right after each call (waits until the worker applied "
                           f"the log to its end) vs GET /ofa/health p50 {health50:.1f} ms, same connections; "
                           f"p99 {percentile(rtt.read_ms, 99):.1f} ms vs {percentile(rtt.health_ms, 99):.1f} ms",
                           "report"),
                ]
        f = self.raw.get("foreign")
        if f is not None:
            total = sum(f.foreign.values())
            detail = ", ".join(f"{mode}: {f.foreign[mode]} foreign / {f.own[mode]} own, "
                               f"{f.answered[mode]} commands answered" for mode in f.foreign)
            figures.append(Figure("consumer_foreign_records", total, "count",
                                  f"{f.flood_records:,} records from 10 assets in {f.seconds:g}s; {detail}",
                                  "0", lambda v: v == 0))
        b = self.raw.get("boot")
        if b is not None:
            ext, plain = median(b.ext_ms), median(b.plain_ms)
            figures.append(Figure("worker_boot_ms", ext, "ms",
                                  f"plain Flask worker {plain:.0f} ms (median of {len(b.ext_ms)})",
                                  "≤ 500 ms", lambda v: v <= 500))
        s = self.raw.get("scaling")
        if s is not None:
            large, small = rates(s.large), rates(s.small)
            figures.append(Figure("publish_scaling_1000_attrs", paired(large, small), "ratio",
                                  f"1000 attrs + 100 methods {median(large):,.0f}/s vs 5 + 2 {median(small):,.0f}/s, "
                                  f"medians of {len(small)} rounds; CPU per record {cpu_us(s.large)} vs "
                                  f"{cpu_us(s.small)}", "≥ 0.9", lambda v: v >= 0.9))
        by_name = {fig.name: fig for fig in figures}
        goals = {name: "report" for name in ("command_rtt_p50_ms", "http_method_route_rps",
                                             "http_method_route_rps_sqlite", "read_after_write_p50_ms")}
        ordered = []
        for name in FIGURES:
            fig = by_name.get(name)
            if fig is None:
                failed = "; ".join(f"{k}: {v}" for k, v in self.errors.items()) or "not measured"
                fig = Figure(name, None, "ratio", f"part failed ({failed})"[:200], goals.get(name, "—"))
            ordered.append(fig)
        return ordered


def render_table(figures: list[Figure]) -> str:
    header = ("figure", "value", "goal", "met", "baseline and detail (same run)")
    rows = [(f.name, f.text(), f.goal, f.verdict(), f.baseline) for f in figures]
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(4)]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(widths[i]) if i < 4 else c for i, c in enumerate(cells)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|" + "-" * 32 + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def report(run: Run, figures: list[Figure], elapsed: float, argv: list[str]) -> str:
    info = machine()
    lines = [
        f"flask-openfactory benchmarks, {run.mode.name} mode, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, "
        f"took {elapsed:.0f}s",
        "command: python -m bench" + ("".join(f" {a}" for a in argv)),
        f"machine: {info['cores']} cores, {info['cpu']}, {info['memory']} RAM, {info['os']}",
        f"python: {info['python']}; confluent-kafka {info['confluent-kafka']}; flask {info['flask']}; "
        f"gunicorn {info['gunicorn']} (-w 2, {shipped_gunicorn()}, --no-control-socket)",
        f"broker: {info['broker']}",
        f"code: {run.code}" + ("" if run.code_after == run.code else f"; CHANGED during the run to {run.code_after}"),
        f"HTTP load generator: {run.loadgen}",
        f"machine load: load average {run.load_before} before the run; other processes used "
        f"{run.others_cpu:.0f} of {run.capacity:.0f} core-seconds during it "
        f"({100 * run.others_cpu / max(run.capacity, 1e-9):.0f}%; figures are paired to cancel that out)",
        "",
        render_table(figures),
        "",
        *(f"{f.name}: {f.text()}" for f in figures),
    ]
    return "\n".join(lines) + "\n"


def soak(minutes: float, output: Path | None, argv: list[str]) -> int:
    """The soak mode: one long steady load, a table per worker; exit 1 if anything leaked or failed."""
    from harness.soak import run_soak
    from harness.soak_report import render, trends

    warmup = min(60.0, minutes * 60 / 5)
    broker = Broker()
    started = time.monotonic()
    try:
        broker.start()
        result = run_soak(broker.bootstrap, broker.create_topic, seconds=minutes * 60, workers=2,
                          command_rate=10.0, http_rate=10.0, sample_every=5.0)
    finally:
        broker.stop()
    found = trends(result, warmup)
    info = machine()
    text = "\n".join([
        f"flask-openfactory soak, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, took {time.monotonic() - started:.0f}s",
        "command: python -m bench" + "".join(f" {a}" for a in argv),
        f"machine: {info['cores']} cores, {info['cpu']}, {info['memory']} RAM, {info['os']}",
        f"python: {info['python']}; confluent-kafka {info['confluent-kafka']}; gunicorn {info['gunicorn']}",
        f"broker: {info['broker']}",
        f"code: {code_version()}",
        "",
        render(result, found, warmup),
    ])
    path = output or BENCH_DIR / "results-soak.txt"
    path.write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    log(f"results written to {path}")
    failed = (result.pids_after != result.pids_before or result.http_errors or result.kafka_errors
              or result.commands_ok != result.commands_sent or set(result.http) != {200})
    return 1 if failed else 0


def _reference_ceiling(http: Any, server_cpu_us: float, ref_rps: float) -> str:
    """The most ``http_vs_reference_server`` can be on this machine: wrk runs on the same cores.

    With c_s server CPU and c_w wrk CPU per request, N cores serve at most N / (c_s + c_w)
    requests per second; the single-threaded reference uses one core and leaves wrk the other.
    """
    client = [load.client_cpu_seconds / load.ok * 1e6 for load in http.ext_user if load.client_cpu_seconds]
    if not client or ref_rps <= 0:
        return ""
    cores = os.cpu_count() or 1
    best = cores * 1e6 / (server_cpu_us + median(client))
    return (f"; wrk's own CPU per request {median(client):.0f} µs on the same {cores} cores, so at most "
            f"{best:,.0f} req/s here: a ceiling of {best / ref_rps:.2f}× the reference on this machine")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer records, requests and commands (< 2 min)")
    parser.add_argument("--soak", action="store_true",
                        help="the soak instead: steady commands and HTTP calls under gunicorn -w 2, workers sampled")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak (default 10)")
    parser.add_argument("--output", type=Path,
                        help="results file (default bench/results.txt, bench/results-quick.txt with --quick, "
                             "bench/results-soak.txt with --soak)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto",
                        help="HTTP load generator: wrk when installed (auto), or the Python one")
    args = parser.parse_args(argv)
    argv_used = sys.argv[1:] if argv is None else argv

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # unwind: the finally blocks stop our processes

    signal.signal(signal.SIGTERM, terminate)
    if args.soak:
        return soak(args.minutes, args.output, argv_used)
    run = Run(QUICK if args.quick else FULL, args.loadgen)
    started = time.monotonic()
    run.execute()
    figures = run.figures()
    text = report(run, figures, time.monotonic() - started, argv_used)
    output = args.output or BENCH_DIR / ("results-quick.txt" if args.quick else "results.txt")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    log(f"results written to {output}")
    return 1 if run.errors or any(f.value is None for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
