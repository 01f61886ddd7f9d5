"""Issue 6 soak, test-suite sized: a steady command and attribute rate under real gunicorn.

``harness/soak.py`` runs the load (``move_axis`` commands through Kafka from
another asset, ``POST /ofa/methods/move_axis`` over HTTP, metrics scrapes)
against ``gunicorn -w 2`` and samples each worker's RSS, threads and open
file descriptors; ``python -m bench --soak`` runs the same for longer. The
broker is this test's own (the soak fills a partition, and Tansu's fetch
cost grows with the batches in it).

Resource bounds, not timings: after the warm-up, the mean RSS of the last
third of the samples may exceed that of the first third by 2 MiB at most
(measured: +0.0 to +0.3 MiB; a leak of 10 KiB per HTTP call shows as 3.5 MiB),
and the thread and descriptor counts may move by a small constant only (a
consumer's connection being re-established), never grow with time.
"""

from __future__ import annotations

import pytest

from harness.broker import TansuBroker
from harness.soak import run_soak
from harness.soak_report import render, trends

SECONDS = 150.0
WARMUP = 40.0  # imports, caches, and the executor's 500 remembered correlation ids (harness.soak.DEDUPE_SIZE)
RSS_TOLERANCE_MB = 2.0  # last third vs first third, per worker
THREADS_TOLERANCE = 2  # max - min over the samples after the warm-up
FDS_TOLERANCE = 4


@pytest.mark.slow  # minutes by design: .ci/run runs it on the platform's Python (3.13) only
def test_soak_workers_keep_memory_threads_and_fds_flat(own_broker: TansuBroker) -> None:
    result = run_soak(own_broker.bootstrap, own_broker.create_topic, seconds=SECONDS, workers=2,
                      command_rate=10.0, http_rate=10.0, sample_every=2.0)
    found = trends(result, WARMUP)
    print("\n" + render(result, found, WARMUP))

    assert result.pids_after == result.pids_before, "a worker died or was replaced during the soak"
    assert result.executor in result.pids_before, "no single worker held the executor lock"
    assert not result.kafka_errors, result.kafka_errors[:5]
    assert not result.http_errors, result.http_errors[:5]
    # a method call waits for its result through the log; one not answered within
    # OPENFACTORY_CALL_WAIT is a 504 (it stays in the log), never an error or a 500
    assert set(result.http) <= {200, 504} and result.http[200], result.http
    assert result.commands_sent >= SECONDS * 10 / 2  # the load really ran (its pace is not measured)
    assert result.commands_ok == result.commands_sent, f"commands not answered OK:\n{result.unanswered}"
    for trend in found:
        assert trend.rss_growth <= RSS_TOLERANCE_MB, trend
        assert trend.threads[1] - trend.threads[0] <= THREADS_TOLERANCE, trend
        assert trend.fds[1] - trend.fds[0] <= FDS_TOLERANCE, trend
