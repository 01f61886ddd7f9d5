"""Issue 4 acceptance: the production config under gunicorn, against the real test broker.

Each test deploys the probe app (tests/gunicorn_app.py: the demo plus methods
that record every execution in a file) with its own topic (3 partitions),
asset UUID and lock directory, sends commands as another asset would (a plain
producer writing ``<method>_CMD``), and counts ``_RESULT`` records on the
topic and executions in the side-effect file. Each test ends with a graceful
stop, so that a late duplicate would be on the topic before it is counted,
and the master's single ``avail=UNAVAILABLE`` can be checked.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.broker import TansuBroker
from harness.gunicorn_server import GunicornServer, ServerPool, server_env
from harness.http_load import HttpLoad
from harness.procfs import flock_holders
from harness.topic_watch import CommandSender, Seen, TopicWatcher, answered, results_by_cid
from harness.waiting import wait_for
from kafka_config import KAFKA_TEST_CONFIG
from probe_apps import PROBE_APP, TESTS, executions, side_effects

pytestmark = pytest.mark.gunicorn  # see the markers in setup.cfg

PARTITIONS = 3


@dataclass
class Deployment:
    """One asset on its own topic: how to start it, talk to it and observe it."""

    servers: ServerPool
    topic: str
    asset: str
    env: dict[str, str]
    lock_dir: Path
    effects: Path
    sender: CommandSender
    watcher: TopicWatcher

    def start(self, **options: Any) -> GunicornServer:
        return self.servers.start(env=self.env, app=PROBE_APP, **options)

    def executor(self, server: GunicornServer) -> int:
        """The worker holding the executor lock (seen in /proc/locks)."""

        def holder() -> int | None:
            pids = {pid for path in self.lock_dir.glob("*.lock") for pid in flock_holders(path)}
            workers = pids & set(server.worker_pids())
            return workers.pop() if len(workers) == 1 else None

        return wait_for(holder, 15, "one worker holding the executor lock")

    def send_records(self, count: int, prefix: str) -> dict[str, str]:
        """``count`` ``record`` commands at once; correlation id -> tag."""
        sent = {}
        for i in range(count):
            tag = f"{prefix}-{i}"
            sent[self.sender.send("record", {"tag": tag})] = tag
        self.sender.flush()
        return sent

    def stream(self, count: int, prefix: str, rate: float, at: dict[int, Any] | None = None) -> dict[str, str]:
        """``count`` ``record`` commands at a steady ``rate`` per second; ``at[i]()`` runs before command i."""
        sent = {}
        start = time.monotonic()
        for i in range(count):
            if at and i in at:
                at[i]()
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the stream, not waiting for a condition
            tag = f"{prefix}-{i}"
            sent[self.sender.send("record", {"tag": tag})] = tag
        self.sender.flush()
        return sent

    def wait_answered(self, sent: dict[str, str], method: str = "record", timeout: float = 90) -> None:
        try:
            self.watcher.wait(answered(sent, method), timeout, f"results of {len(sent)} {method} commands")
        except AssertionError as exc:  # say which commands, and whether they ran (a lost result or a lost run)
            missing = sorted(tag for cid, tag in sent.items() if cid not in self.watcher.results(method))
            done = executions(self.effects)
            ran = {tag: done[tag] for tag in missing}
            raise AssertionError(f"{exc}; without a result: {missing[:10]}, executions of those: {ran}") from None

    def unavailable(self) -> list[Seen]:
        return [s for s in self.watcher.values("avail") if s.record.value == "UNAVAILABLE"]

    def stop(self, server: GunicornServer) -> float:
        """Graceful stop; everything written before it is then read. Returns the time it took."""
        started = time.monotonic()
        assert server.stop() == 0, f"gunicorn exited with {server.proc and server.proc.returncode}"
        took = time.monotonic() - started
        self.watcher.barrier(self.sender)
        return took

    def check_exactly_once(self, sent: dict[str, str], *, in_flight: Collection[str] = ()) -> Counter[str]:
        """One OK result per command, carrying its tag, and one execution per tag.

        ``in_flight``: tags that may have run twice, because the worker running
        them was killed before their result was durable (never a completed one).
        """
        results = self.watcher.results("record")
        done = executions(self.effects)
        for cid, tag in sent.items():
            answers = results.get(cid, [])
            assert len(answers) == 1, f"command {cid} ({tag}) answered {len(answers)} times"
            result = answers[0][1]
            assert result.status == "OK", result
            assert result.result["tag"] == tag
            if tag in in_flight:
                assert done[tag] in (1, 2), f"{tag} executed {done[tag]} times"
            else:
                assert done[tag] == 1, f"{tag} executed {done[tag]} times"
        assert set(done) == set(sent.values()), "an execution of a command that was never sent"
        return done

    def check_unavailable_once_at_the_end(self) -> None:
        avail = self.watcher.values("avail")
        values = [s.record.value for s in avail]
        assert values.count("UNAVAILABLE") == 1, values
        assert values[-1] == "UNAVAILABLE", values
        assert values[:-1] and set(values[:-1]) == {"AVAILABLE"}, values


@pytest.fixture
def deployment(kafka_broker: TansuBroker, unique_topic: str, tmp_path: Path) -> Iterator[Deployment]:
    yield from deployment_on(kafka_broker, unique_topic, tmp_path)


def deployment_on(kafka_broker: TansuBroker, unique_topic: str, tmp_path: Path) -> Iterator[Deployment]:
    """A deployment of the probe app on ``unique_topic`` (created here), torn down after the yield."""
    kafka_broker.create_topic(unique_topic, PARTITIONS)
    asset = f"gunicorn-kafka-{uuid.uuid4().hex[:10]}"
    lock_dir = tmp_path / "locks"
    effects = tmp_path / "side-effects.txt"
    env = server_env({
        "FLASK_CONFIG": "production",
        "KAFKA_BROKER": kafka_broker.bootstrap,
        "APP_UUID": asset,
        "SECRET_KEY": "gunicorn-test-secret",
        "FLASK_OPENFACTORY_ASSETS_TOPIC": unique_topic,
        "FLASK_OPENFACTORY_LOCK_DIR": str(lock_dir),
        "FLASK_OPENFACTORY_KAFKA_CONFIG": json.dumps(KAFKA_TEST_CONFIG),
        "OFA_TEST_SIDE_EFFECTS": str(effects),
    })
    pool = ServerPool(tmp_path, pythonpath=TESTS)
    watcher = TopicWatcher(kafka_broker.bootstrap, unique_topic, PARTITIONS, asset)
    sender = CommandSender(kafka_broker.bootstrap, unique_topic, asset, sender_uuid="gunicorn-test-caller")
    deployment = Deployment(pool, unique_topic, asset, env, lock_dir, effects, sender, watcher)
    try:
        yield deployment
    finally:
        try:
            pool.close()
        finally:
            watcher.close()
            deployment.watcher.close()  # a test may have replaced it


def test_three_workers_execute_each_command_once_under_http_load(deployment: Deployment) -> None:
    server = deployment.start(workers=3)
    load = HttpLoad(server.url, ["/", "/ofa/attributes"], threads=3, max_requests=2000).start()
    try:
        wait_for(lambda: load.count >= 30, 30, "the HTTP load to get going")
        started = time.monotonic()
        sent = deployment.stream(300, "load", rate=300)
        deployment.wait_answered(sent)
        took = time.monotonic() - started
    finally:
        load.stop()
    print(f"\n300 commands (sent over 1 s) answered in {took:.2f} s; {load.count} HTTP requests")
    assert load.count > 0
    assert not load.errors, load.errors[:5]
    assert set(load.statuses) == {200}, load.statuses
    assert deployment.unavailable() == []
    deployment.stop(server)
    done = deployment.check_exactly_once(sent)
    assert sum(done.values()) == 300
    deployment.check_unavailable_once_at_the_end()


def test_sigkill_of_the_executing_worker_mid_stream(deployment: Deployment) -> None:
    server = deployment.start(workers=3)
    victim = deployment.executor(server)
    rate, before_kill, after_kill, cap = 50.0, 40, 60, 1500
    sent: dict[str, str] = {}

    def new_executor_answered(seen: list[Seen]) -> bool:
        """A result written by a worker other than the victim (the takeover happened)."""
        return any(result.result["pid"] != victim for answers in results_by_cid(seen, "record").values()
                   for _, result in answers)

    # A steady stream that goes on until another worker answers: the new owner
    # must take over while commands keep coming, not once the partition is quiet.
    start = time.monotonic()
    killed_at = 0.0
    for i in range(cap):
        if i == before_kill:
            deployment.watcher.wait(lambda seen: len(results_by_cid(seen, "record")) >= 20, 30,
                                    "20 results before the kill")
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
        if i >= before_kill + after_kill and new_executor_answered(deployment.watcher.seen):
            break
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the stream, not waiting for a condition
        tag = f"kill-{i}"
        sent[deployment.sender.send("record", {"tag": tag})] = tag
    deployment.sender.flush()
    assert new_executor_answered(deployment.watcher.seen), (
        f"no other worker answered while {cap - before_kill} more commands kept coming after the kill")
    deployment.wait_answered(sent)

    # takeover: from the kill to the first result written by another worker
    first = min(seen.received for answers in deployment.watcher.results("record").values()
                for seen, result in answers if result.result["pid"] != victim and seen.received >= killed_at)
    by_victim = [e for e in side_effects(deployment.effects) if e.pid == victim]
    in_flight = {by_victim[-1].tag} if by_victim else set()
    new_executor = deployment.executor(server)
    print(f"\nSIGKILL of executor {victim} after {len(by_victim)} executions, {len(sent)} commands at "
          f"{rate:g}/s; worker {new_executor} took over; first result from another worker "
          f"{1000 * (first - killed_at):.0f} ms after the kill")
    assert new_executor != victim
    assert victim not in server.worker_pids()
    assert len(server.worker_pids()) == 3  # gunicorn replaced the killed worker
    assert deployment.unavailable() == [], "killing one worker published avail=UNAVAILABLE"

    deployment.stop(server)
    done = deployment.check_exactly_once(sent, in_flight=in_flight)
    twice = [t for t in in_flight if done[t] == 2]
    print(f"commands executed twice (in flight at the kill, result not yet durable): {twice or 'none'}")
    deployment.check_unavailable_once_at_the_end()


def test_sigterm_to_the_master_during_a_slow_command(deployment: Deployment) -> None:
    graceful = 20.0
    server = deployment.start(workers=3, graceful_timeout=graceful)
    cid = deployment.sender.send("slow", {"seconds": 3, "tag": "slow-1"})
    deployment.sender.flush()
    wait_for(lambda: any(e.event == "start" and e.tag == "slow-1" for e in side_effects(deployment.effects)),
             30, "the slow command to start")
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    status = server.wait_exit(graceful + 10)
    took = time.monotonic() - started
    print(f"\nmaster exited {took:.2f} s after SIGTERM (graceful timeout {graceful:g} s), status {status}")
    assert status == 0
    assert took < graceful, f"the server needed {took:.1f} s: gunicorn's graceful timeout killed it"
    deployment.watcher.barrier(deployment.sender)

    answers = deployment.watcher.results("slow").get(cid, [])
    assert len(answers) == 1, answers
    slow_seen, result = answers[0]
    assert result.status == "OK", result
    assert executions(deployment.effects)["slow-1"] == 1
    deployment.check_unavailable_once_at_the_end()
    unavailable = deployment.unavailable()[0]
    assert (unavailable.partition, unavailable.offset) > (slow_seen.partition, slow_seen.offset) \
        and unavailable.partition == slow_seen.partition, "UNAVAILABLE was published before the result"


def test_preload_workers_serve_and_execute(deployment: Deployment) -> None:
    server = deployment.start(workers=3, extra_args=["--preload"])
    answer = server.get("/")
    assert answer.status_code == 200
    assert "record" in answer.json()["methods"]
    sent = deployment.send_records(30, "preload")
    deployment.wait_answered(sent)
    executors = {e.pid for e in side_effects(deployment.effects)}
    assert executors <= set(server.worker_pids()) and server.pid not in executors, executors
    deployment.stop(server)
    deployment.check_exactly_once(sent)
    deployment.check_unavailable_once_at_the_end()


def test_max_requests_recycling_under_http_load(deployment: Deployment) -> None:
    server = deployment.start(workers=3, extra_args=["--max-requests", "50"])
    before = set(server.worker_pids())
    load = HttpLoad(server.url, ["/", "/ofa/attributes"], threads=3, max_requests=2000).start()
    try:
        sent = deployment.stream(150, "recycle", rate=40)
        deployment.wait_answered(sent)
    finally:
        load.stop()
    after = set(server.worker_pids())
    executors = Counter(e.pid for e in side_effects(deployment.effects))
    booted = server.log_text().count("Booting worker with pid")
    print(f"\n{load.count} HTTP requests, {booted} workers booted, commands executed by "
          f"{len(executors)} worker(s): {dict(executors)}")
    assert not load.errors, load.errors[:5]
    assert set(load.statuses) == {200}, load.statuses
    assert before - after, "no worker was recycled"
    assert deployment.unavailable() == [], "recycling a worker published avail=UNAVAILABLE"
    deployment.stop(server)
    deployment.check_exactly_once(sent)
    deployment.check_unavailable_once_at_the_end()


def test_hup_mid_stream_replaces_workers_without_loss(deployment: Deployment) -> None:
    server = deployment.start(workers=3)
    before = set(server.worker_pids())
    sent = deployment.stream(100, "hup", rate=40, at={30: lambda: server.signal(signal.SIGHUP)})
    deployment.wait_answered(sent)
    after = wait_for(lambda: (lambda pids: pids if len(pids) == 3 and not pids & before else None)(
        set(server.worker_pids())), 30, "three new workers after HUP")
    # the old executor may run the whole stream (it executes until a new worker has taken over):
    # commands sent once the reload is over are a new worker's
    later = deployment.send_records(5, "after-hup")
    deployment.wait_answered(later)
    sent.update(later)
    executors = Counter(e.pid for e in side_effects(deployment.effects))
    print(f"\nworkers {sorted(before)} -> {sorted(after)}; executions per pid {dict(executors)}")
    assert set(executors) & before and set(executors) & after, "the executor role did not move to a new worker"
    assert deployment.unavailable() == [], "HUP published avail=UNAVAILABLE"
    deployment.stop(server)
    deployment.check_exactly_once(sent)
    deployment.check_unavailable_once_at_the_end()
