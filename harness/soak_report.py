"""What a soak measured, and whether it stayed flat: samples, per-worker trends, the report table.

``run_soak`` (``harness.soak``) fills a ``SoakResult``; ``trends`` compares the
first and last third of each worker's samples after a warm-up, so a leak shows
as growth whatever the machine's speed; ``render`` prints both for the test's
output and the benchmark's results file.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field

from .measured_gunicorn import shipped_gunicorn

__all__ = ["Sample", "SoakResult", "Trend", "render", "trends"]


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the load started
    pid: int
    rss_mb: float
    threads: int
    fds: int


@dataclass
class SoakResult:
    seconds: float
    workers: int
    command_rate: float
    http_rate: float
    pids_before: list[int]
    pids_after: list[int]
    executor: int | None
    dedupe_size: int
    samples: list[Sample] = field(default_factory=list)
    commands_sent: int = 0
    commands_ok: int = 0  # distinct commands answered OK on the topic
    http: Counter[int] = field(default_factory=Counter)
    http_errors: list[str] = field(default_factory=list)
    scrapes: int = 0
    kafka_errors: list[str] = field(default_factory=list)
    unanswered: str = ""  # what a re-read of the whole topic says about commands without an answer


@dataclass(frozen=True)
class Trend:
    """One worker after the warm-up: means of the first and last third, extremes."""

    pid: int
    role: str
    samples: int
    rss_first: float
    rss_last: float
    rss_max: float
    threads: tuple[int, int]  # (min, max)
    fds: tuple[int, int]

    @property
    def rss_growth(self) -> float:
        return self.rss_last - self.rss_first


def trends(result: SoakResult, warmup: float) -> list[Trend]:
    """Per worker, over the samples after ``warmup`` seconds."""
    found = []
    for pid in result.pids_before:
        samples = sorted((s for s in result.samples if s.pid == pid and s.at >= warmup), key=lambda s: s.at)
        if len(samples) < 3:
            raise RuntimeError(f"worker {pid}: {len(samples)} samples after the warm-up; run longer")
        third = len(samples) // 3
        found.append(Trend(
            pid=pid,
            role="executes commands" if pid == result.executor else "standing by",
            samples=len(samples),
            rss_first=statistics.fmean(s.rss_mb for s in samples[:third]),
            rss_last=statistics.fmean(s.rss_mb for s in samples[-third:]),
            rss_max=max(s.rss_mb for s in samples),
            threads=(min(s.threads for s in samples), max(s.threads for s in samples)),
            fds=(min(s.fds for s in samples), max(s.fds for s in samples)),
        ))
    return found


def render(result: SoakResult, found: list[Trend], warmup: float) -> str:
    """A table per worker plus what ran, for the README and the results file."""
    header = ("worker", "role", "samples", "RSS first third", "RSS last third", "growth", "RSS max",
              "threads min-max", "fds min-max")
    rows = [(str(t.pid), t.role, str(t.samples), f"{t.rss_first:.1f} MiB", f"{t.rss_last:.1f} MiB",
             f"{t.rss_growth:+.1f} MiB", f"{t.rss_max:.1f} MiB", f"{t.threads[0]}-{t.threads[1]}",
             f"{t.fds[0]}-{t.fds[1]}") for t in found]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(cells)) + " |"

    http_ok = result.http.get(200, 0)
    lines = [
        f"soak: {result.seconds / 60:g} min under gunicorn -w {result.workers} ({shipped_gunicorn()}), "
        f"{result.command_rate:g} move_axis commands/s through Kafka + {result.http_rate:g} "
        f"POST /ofa/methods/move_axis/s + a /ofa/metrics and /ofa/attributes scrape every few seconds; "
        f"OPENFACTORY_DEDUPE_SIZE={result.dedupe_size}; samples after a {warmup:g} s warm-up",
        f"commands: {result.commands_sent} sent, {result.commands_ok} answered OK; HTTP: {http_ok} answered 200, "
        f"{sum(result.http.values()) - http_ok} other, {len(result.http_errors)} errors; workers "
        f"{'unchanged' if result.pids_after == result.pids_before else f'{result.pids_before} -> {result.pids_after}'}"
        + (f"; kafka errors: {result.kafka_errors[:3]}" if result.kafka_errors else ""),
        *([f"unanswered commands:\n{result.unanswered}"] if result.unanswered else []),
        "",
        line(header),
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
        *(line(r) for r in rows),
    ]
    return "\n".join(lines) + "\n"
