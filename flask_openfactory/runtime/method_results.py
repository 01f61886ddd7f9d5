"""Method results seen on the asset's log, counted for metrics.

The runtime counts them as its follower applies the log; ``metrics`` renders
them when prometheus-client is installed. They live with the runtime, which
records them, so that the runtime never imports the metrics module.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Container
from dataclasses import dataclass, field

# Seconds; machines answer in milliseconds to minutes (the default timeout is 60 s).
DURATION_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                                       300.0)
OTHER_METHOD = "_other"  # results of methods this app does not declare: bounded labels
STATUSES = ("OK", "ERROR", "REJECTED")


@dataclass(slots=True)
class _Histogram:
    buckets: list[int]
    total: float = 0.0
    count: int = 0


@dataclass(slots=True)
class ResultsSnapshot:
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (method, status) -> results
    durations: dict[str, _Histogram] = field(default_factory=dict)  # method -> histogram (OK and ERROR)


class MethodResults:
    """Method results seen on the asset's log, by method and status, with durations.

    Labels stay bounded whatever other assets write: a method this app does not
    declare counts as ``_other``, an unknown status as ``OTHER`` (a flood of
    commands with random method names must not grow memory).
    """

    def __init__(self, buckets: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.buckets = buckets
        self._lock = threading.Lock()
        self._data = ResultsSnapshot()

    def observe(self, method: str, status: str, duration_ms: float | None, known: Container[str]) -> None:
        method = method if method in known else OTHER_METHOD
        status = status if status in STATUSES else "OTHER"
        with self._lock:
            key = (method, status)
            self._data.counts[key] = self._data.counts.get(key, 0) + 1
            if status == "REJECTED" or duration_ms is None or not math.isfinite(duration_ms) or duration_ms < 0:
                return  # a rejected command never ran: no duration
            seconds = duration_ms / 1000.0
            histogram = self._data.durations.get(method)
            if histogram is None:
                histogram = self._data.durations[method] = _Histogram([0] * len(self.buckets))
            index = bisect.bisect_left(self.buckets, seconds)  # bucket "le": upper bounds are inclusive
            if index < len(self.buckets):
                histogram.buckets[index] += 1
            histogram.total += seconds
            histogram.count += 1

    def snapshot(self) -> ResultsSnapshot:
        with self._lock:
            return ResultsSnapshot(
                dict(self._data.counts),
                {m: _Histogram(list(h.buckets), h.total, h.count) for m, h in self._data.durations.items()},
            )
