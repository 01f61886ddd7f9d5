"""Issue 7 acceptance: background tasks under ``gunicorn -w 3`` against the real test broker.

The app (tests/gunicorn_task_app.py: the demo plus tasks) publishes a
heartbeat from a plain task and from an ``async`` task every 100 ms, each
carrying the worker's pid, and a marker when a task's stop signal is set.
Everything is observed from outside the server: the topic, /proc and the
executor lock. A task must run in exactly one worker, move to another
worker within seconds when that one is killed, stop within the grace period
on SIGTERM, and be restarted (its Condition at Fault) when it raises. A
subscription (the app echoes another asset's ``position_x``) must move with a
killed worker too, losing no update.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from flask_openfactory import Record
from harness.broker import TansuBroker
from harness.gunicorn_server import GunicornServer, ServerPool, server_env
from harness.procfs import flock_holders
from harness.topic_watch import CommandSender, Seen, TopicWatcher
from harness.waiting import wait_for
from kafka_config import KAFKA_TEST_CONFIG
from probe_apps import TESTS

pytestmark = pytest.mark.gunicorn  # see the markers in setup.cfg

PARTITIONS = 3
TASK_APP = "gunicorn_task_app:create_app()"
TAKEOVER_BOUND = 5.0  # seconds: the acceptance says "within seconds"
HEARTBEATS = ("heartbeat", "async_heartbeat")


def written_by_a_task(seen: Seen) -> bool:
    """Not the declared default (``UNAVAILABLE``) each worker publishes when it starts."""
    return seen.record.value != "UNAVAILABLE"


def pid_of(seen: Seen) -> int:
    return int(str(seen.record.value).split()[0])


def count_of(seen: Seen) -> int:
    return int(str(seen.record.value).split()[1])


def stamp(seen: Seen) -> float:
    """The record's own timestamp (written by the worker) as epoch seconds."""
    moment = datetime.strptime(seen.record.timestamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass
class Deployment:
    servers: ServerPool
    asset: str
    env: dict[str, str]
    lock_dir: Path
    watcher: TopicWatcher
    sender: CommandSender

    def start(self, **options: Any) -> GunicornServer:
        return self.servers.start(env=self.env, app=TASK_APP, **options)

    def executor(self, server: GunicornServer, exclude: int | None = None) -> int:
        """The worker holding the executor lock (seen in /proc/locks)."""

        def holder() -> int | None:
            pids = {pid for path in self.lock_dir.glob("*.lock") for pid in flock_holders(path)}
            workers = (pids & set(server.worker_pids())) - {exclude}
            return workers.pop() if len(workers) == 1 else None

        return wait_for(holder, 15, "one worker holding the executor lock")

    def values(self, attr: str) -> list[Seen]:
        return [s for s in self.watcher.values(attr) if written_by_a_task(s)]

    def beats(self, attr: str = "heartbeat") -> list[Seen]:
        return self.values(attr)

    def wait_beats(self, count: int, *, attr: str = "heartbeat", after: float = 0.0,
                   timeout: float = 20.0) -> list[Seen]:
        """At least ``count`` heartbeats received after the monotonic time ``after``."""
        return self.watcher.wait(
            lambda seen: (lambda found: found if len(found) >= count else None)(
                [s for s in seen if s.record.id == attr and s.received > after and written_by_a_task(s)]),
            timeout, f"{count} {attr} records")


@pytest.fixture
def make_deployment(kafka_broker: TansuBroker, tmp_path: Path) -> Iterator[Any]:
    """``make_deployment(topic, **env)``: the task app's environment on a fresh topic; servers stopped at teardown."""
    pools: list[ServerPool] = []
    watchers: list[TopicWatcher] = []

    def make(topic: str, **extra_env: str) -> Deployment:
        kafka_broker.create_topic(topic, PARTITIONS)
        asset = f"gunicorn-tasks-{uuid.uuid4().hex[:10]}"
        lock_dir = tmp_path / "locks"
        env = server_env({
            "FLASK_CONFIG": "production",
            "KAFKA_BROKER": kafka_broker.bootstrap,
            "APP_UUID": asset,
            "SECRET_KEY": "gunicorn-test-secret",
            "FLASK_OPENFACTORY_ASSETS_TOPIC": topic,
            "FLASK_OPENFACTORY_LOCK_DIR": str(lock_dir),
            "FLASK_OPENFACTORY_KAFKA_CONFIG": json.dumps(KAFKA_TEST_CONFIG),
            **extra_env,
        })
        pools.append(ServerPool(tmp_path, pythonpath=TESTS))
        watchers.append(TopicWatcher(kafka_broker.bootstrap, topic, PARTITIONS, asset))
        sender = CommandSender(kafka_broker.bootstrap, topic, asset, sender_uuid="gunicorn-tasks-test")
        return Deployment(pools[-1], asset, env, lock_dir, watchers[-1], sender)

    yield make
    try:
        for pool in pools:
            pool.close()
    finally:
        for watcher in watchers:
            watcher.close()


def test_one_worker_runs_the_tasks_and_a_killed_one_hands_them_over(make_deployment: Any, unique_topic: str) -> None:
    deployment: Deployment = make_deployment(unique_topic)
    server = deployment.start(workers=3)
    first = deployment.executor(server)
    deployment.wait_beats(20)
    deployment.wait_beats(20, attr="async_heartbeat")
    for attr in HEARTBEATS:
        pids = {pid_of(s) for s in deployment.beats(attr)}
        assert pids == {first}, f"{attr} from workers {pids}; the executing worker is {first}"

    last_before = deployment.beats()[-1]
    killed_at = time.monotonic()
    os.kill(first, signal.SIGKILL)
    resumed = deployment.watcher.wait(
        lambda seen: [s for s in seen if s.record.id == "heartbeat" and written_by_a_task(s) and pid_of(s) != first],
        30, "a heartbeat from another worker")[0]
    gap = resumed.received - killed_at
    silence = resumed.received - last_before.received
    second = pid_of(resumed)
    assert second in server.worker_pids() and second != first
    assert gap < TAKEOVER_BOUND, (
        f"heartbeats resumed {gap:.2f} s after the SIGKILL (acceptance: within seconds, bound {TAKEOVER_BOUND:g} s)")

    # Stable again: every heartbeat since the takeover comes from the one new executor,
    # not from the worker gunicorn booted to replace the killed one.
    deployment.wait_beats(20, after=resumed.received)
    deployment.wait_beats(20, attr="async_heartbeat", after=resumed.received)
    assert len(server.worker_pids()) == 3
    assert deployment.executor(server) == second
    for attr in HEARTBEATS:
        pids = [pid_of(s) for s in deployment.beats(attr)]
        assert set(pids) == {first, second}, pids
        switch = pids.index(second)
        assert set(pids[switch:]) == {second}, f"{attr}: both workers ran the task after the takeover: {pids}"
    conditions = [(s.record.value, s.record.tag) for s in deployment.values("beat_task")]
    assert conditions and set(conditions) == {("running", "Normal")}, conditions
    print(f"\nSIGKILL of task worker {first}: heartbeats resumed from worker {second} {1000 * gap:.0f} ms after "
          f"the kill ({1000 * silence:.0f} ms after the last heartbeat before it)")


def test_sigterm_stops_the_tasks_within_the_grace_period(make_deployment: Any, unique_topic: str) -> None:
    graceful = 10.0
    deployment: Deployment = make_deployment(unique_topic)
    server = deployment.start(workers=3, graceful_timeout=graceful)
    executor = deployment.executor(server)
    deployment.wait_beats(5)
    deployment.wait_beats(5, attr="async_heartbeat")

    signalled, signalled_wall = time.monotonic(), time.time()
    server.signal(signal.SIGTERM)
    status = server.wait_exit(graceful + 10)
    exited = time.monotonic() - signalled
    deployment.watcher.barrier(deployment.sender)  # everything the server wrote is read

    markers = {attr: deployment.values(f"{attr}_stopped") for attr in HEARTBEATS}
    timings = []
    for attr, seen in markers.items():
        assert len(seen) == 1, f"{attr}: stop markers {[s.record.value for s in seen]}"
        marker = seen[0]
        assert pid_of(marker) == executor, marker
        beats = deployment.beats(attr)
        assert count_of(marker) == count_of(beats[-1]), "the task published heartbeats after its stop marker"
        assert {pid_of(s) for s in beats} == {executor}, "another worker ran the task during the shutdown"
        stopped_after = stamp(marker) - signalled_wall
        timings.append(f"{attr} stopped {1000 * stopped_after:.0f} ms after SIGTERM")
        assert stopped_after < graceful, (
            f"{attr}: the stop marker was stamped {stopped_after:.2f} s after SIGTERM "
            f"(acceptance: within the grace period, {graceful:g} s)")
    print(f"\n{'; '.join(timings)}; master exited {exited:.2f} s after SIGTERM "
          f"(graceful timeout {graceful:g} s), status {status}")
    assert status == 0
    assert exited < graceful, (
        f"the master exited {exited:.2f} s after SIGTERM (acceptance: within the grace period, {graceful:g} s)")


def test_a_task_that_raises_is_faulted_and_restarted(make_deployment: Any, unique_topic: str) -> None:
    deployment: Deployment = make_deployment(unique_topic, OFA_TEST_FLAKY_TASK="1")
    server = deployment.start(workers=2)
    executor = deployment.executor(server)
    runs = deployment.watcher.wait(
        lambda seen: (lambda found: found if len(found) >= 3 else None)(
            [s for s in seen if s.record.id == "flaky_runs" and written_by_a_task(s)]), 20,
        "three runs of the failing task")
    faults = deployment.watcher.wait(
        lambda seen: (lambda found: found if len(found) >= 3 else None)(
            [s for s in seen if s.record.id == "flaky_task" and s.record.tag == "Fault"]),
        20, "the failing task's condition at Fault three times")
    assert [count_of(s) for s in runs[:3]] == [1, 2, 3], [s.record.value for s in runs]
    assert {pid_of(s) for s in runs} == {executor}
    assert [s.record.value for s in faults[:3]] == [f"RuntimeError: flaky failure #{n}" for n in (1, 2, 3)]
    conditions = [(s.record.value, s.record.tag) for s in deployment.values("flaky_task")]
    assert conditions[0] == ("running", "Normal"), conditions
    restart_delays = [b.received - a.received for a, b in zip(runs, runs[1:3], strict=False)]
    # The other tasks are not affected by their neighbour's failures.
    deployment.wait_beats(10)
    assert {pid_of(s) for s in deployment.beats()} == {executor}
    print(f"\nfailing task restarted after {', '.join(f'{1000 * d:.0f} ms' for d in restart_delays)} "
          "(backoff 0.2 s, doubling, at most 0.4 s)")


def test_a_subscription_moves_with_a_killed_worker_and_loses_no_update(
        make_deployment: Any, unique_topic: str) -> None:
    """The subscription runs in the executing worker; after SIGKILL the next one delivers the rest."""
    watched = f"watched-{uuid.uuid4().hex[:10]}"
    deployment: Deployment = make_deployment(unique_topic, OFA_TEST_WATCH=watched)
    server = deployment.start(workers=3)
    first = deployment.executor(server)
    machine = deployment.sender  # any producer with Java's partitioner writes as the machine would

    def move(value: int) -> None:
        machine.publish(Record.create(watched, "position_x", float(value), tag="Position.X", type="Samples"))

    def echoes() -> list[tuple[int, float]]:
        return [(pid_of(s), float(str(s.record.value).split()[1])) for s in deployment.values("echo")]

    move(0)
    machine.flush()
    deployment.watcher.wait(lambda seen: echoes(), 20, "the first echo (the subscription running)")
    for value in range(1, 11):
        move(value)
    machine.flush()
    deployment.watcher.wait(lambda seen: 10.0 in {v for _, v in echoes()}, 20, "updates 1..10 echoed")
    os.kill(first, signal.SIGKILL)
    for value in range(11, 31):
        move(value)
    machine.flush()
    deployment.watcher.wait(lambda seen: 30.0 in {v for _, v in echoes()}, 30, "updates 11..30 echoed")

    delivered = echoes()
    values = {v for _, v in delivered}
    assert values >= {float(v) for v in range(31)}, f"updates never delivered: {sorted(set(range(31)) - values)}"
    pids = [pid for pid, _ in delivered]
    switch = next(i for i, pid in enumerate(pids) if pid != first)
    second = pids[switch]
    assert second in server.worker_pids() and second != first
    assert set(pids[switch:]) == {second}, f"two workers delivered after the takeover: {pids}"
    after = [v for pid, v in delivered[switch:]]
    assert after == sorted(after), f"the new worker delivered out of order: {after}"
    print(f"\nsubscription: worker {first} killed after update 10; worker {second} delivered "
          f"{after[0]:g}..{after[-1]:g} ({len(after)} echoes, {len(delivered) - 31} duplicate(s) in all)")
