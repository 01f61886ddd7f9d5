"""Election "group": several processes share one asset UUID through a consumer group.

Against the real broker: one member owns the asset's command log at a time, a
member that leaves or dies hands it over, and the next owner resumes after the
committed offset without running again a command whose result is already in
the log. Every member polls continuously in its own thread, as a serving
process does: Tansu stalls a group for good when a member leaves while
another is half-way through a join without polling.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from flask_openfactory.runtime import AssetRuntime, RuntimeSettings
from flask_openfactory.transports import TransportOptions, create_transport
from flask_openfactory.transports.base import LogEntry, Transport
from flask_openfactory.transports.kafka import KafkaGroupReader
from flask_openfactory.transports.partitioning import partition_for_key
from flask_openfactory.wire.methods import ofa_method, spec_of
from flask_openfactory.wire.protocol import Record
from harness.broker import TansuBroker
from harness.waiting import wait_for
from kafka_config import KAFKA_TEST_CONFIG

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]




def command(asset: str, n: int, cid: str | None = None) -> tuple[str, bytes]:
    """A ``mark_CMD`` record value as another asset writes it, and its correlation id."""
    cid = cid or str(uuid.uuid4())
    envelope = {"header": {"correlation_id": cid, "sender_uuid": "CALLER",
                           "timestamp": datetime.now(UTC).isoformat(), "signature": None},
                "arguments": {"n": str(n)}}
    record = Record.create(asset, "mark_CMD", json.dumps(envelope), tag="Method.Command", type="OpenFactory")
    return cid, record.to_wire()


def send(broker: TansuBroker, topic: str, asset: str, *values: bytes) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "partitioner": "murmur2_random", "linger.ms": 0})
    for value in values:
        producer.produce(topic, key=asset.encode(), value=value)
    assert producer.flush(10) == 0


def results_on_topic(broker: TansuBroker, topic: str, partitions: int, asset: str,
                     done: Callable[[list[dict[str, Any]]], bool], timeout: float) -> list[dict[str, Any]]:
    """Decoded ``_RESULT`` values of ``asset`` read from the beginning, until ``done``."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while not done(found):
            if time.monotonic() >= deadline:
                raise AssertionError(f"results of {asset} on {topic}: {found} after {timeout:g} s")
            for message in consumer.consume(500, 0.1):
                if message.error() is None and message.key() == asset.encode():
                    doc = json.loads(message.value())
                    if doc["ID"].endswith("_RESULT"):
                        found.append(json.loads(doc["VALUE"]))
        return found
    finally:
        consumer.close()


def group_transport(broker: TansuBroker, topic: str) -> Transport:
    return create_transport("kafka://" + broker.bootstrap,
                            TransportOptions(topic=topic, election="group", kafka_config=dict(KAFKA_TEST_CONFIG)))


class Member:
    """One group reader polled without pause in its own thread, like a serving process.

    It commits each entry once read (what the dispatcher does once a result is
    durable) and is closed in its own thread, since a consumer is not shared.
    """

    def __init__(self, name: str, transport: Transport, asset: str, group: str) -> None:
        self.name = name
        self.transport = transport
        self.asset = asset
        self.group = group
        self.reader: KafkaGroupReader | None = None
        self.entries: list[LogEntry] = []
        self.errors: list[str] = []
        self.owned_at: float | None = None
        self._close = threading.Event()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"member-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            reader = self.transport.command_reader(self.asset, self.group)
            assert isinstance(reader, KafkaGroupReader)
            self.reader = reader
            while not self._close.is_set():
                for entry in reader.poll(0.05):
                    self.entries.append(entry)
                    reader.commit(entry.offset)
                if reader.owns and self.owned_at is None:
                    self.owned_at = time.monotonic()
        except Exception as exc:  # surfaced by the test through .errors
            self.errors.append(repr(exc))
        finally:
            if self.reader is not None:
                self.reader.close()
            self.closed.set()

    @property
    def owns(self) -> bool:
        return self.reader is not None and self.reader.owns

    @property
    def joined(self) -> bool:
        return self.reader is not None and bool(self.reader.assignments)

    def close(self, timeout: float = 15.0) -> None:
        self._close.set()
        assert self.closed.wait(timeout), f"member {self.name} did not close within {timeout:g} s"
        self.thread.join(timeout)

    def commands(self) -> list[tuple[int, str]]:
        """(offset, correlation id) of the commands this member read while owning."""
        out = []
        for entry in self.entries:
            if entry.record is not None and entry.record.id == "mark_CMD":
                out.append((entry.offset, json.loads(str(entry.record.value))["header"]["correlation_id"]))
        return out


@pytest.fixture
def members() -> Iterator[list[Member]]:
    made: list[Member] = []
    yield made
    for member in made:
        member.close()
        member.transport.close(2.0)


def test_one_owner_and_the_other_member_resumes_after_the_committed_offset(
        kafka_broker: TansuBroker, unique_topic: str, members: list[Member]) -> None:
    kafka_broker.create_topic(unique_topic, 3)
    asset, group = f"GRP-{uuid.uuid4().hex[:10]}", f"ofa-app-{uuid.uuid4().hex[:10]}"
    ours = partition_for_key(asset.encode(), 3)
    members.append(Member("a", group_transport(kafka_broker, unique_topic), asset, group))
    wait_for(lambda: members[0].owns, 20, "the first member owning")
    members.append(Member("b", group_transport(kafka_broker, unique_topic), asset, group))
    wait_for(lambda: all(m.joined for m in members) and [m.owns for m in members].count(True) == 1, 20,
             "both members in the group and exactly one owner")
    owner, standby = (m for m in sorted(members, key=lambda m: not m.owns))
    first = [command(asset, n) for n in range(3)]
    send(kafka_broker, unique_topic, asset, *(value for _, value in first))
    wait_for(lambda: len(owner.commands()) == 3, 10, "the owner reading 3 commands")
    assert [m.owns for m in (owner, standby)] == [True, False]  # still exactly one
    assert standby.entries == [] and set(standby.reader.received) <= {ours}  # type: ignore[union-attr]
    assert set(owner.reader.received) == {ours}  # type: ignore[union-attr]

    owner.close()  # leaves the group after a final commit
    closed_at = time.monotonic()
    wait_for(lambda: standby.owns, 20, "the standby member taking over")
    takeover = time.monotonic() - closed_at
    later = [command(asset, n) for n in range(3, 5)]
    send(kafka_broker, unique_topic, asset, *(value for _, value in later))
    wait_for(lambda: len(standby.commands()) == 2, 10, "the new owner reading the 2 new commands")

    read_first, read_later = owner.commands(), standby.commands()
    assert [cid for _, cid in read_first] == [cid for cid, _ in first]
    assert [cid for _, cid in read_later] == [cid for cid, _ in later]  # nothing replayed, nothing skipped
    assert read_later[0][0] == read_first[-1][0] + 1  # resumed right after the committed offset
    assert set(standby.reader.received) == {ours}  # type: ignore[union-attr]
    assert owner.errors == standby.errors == []
    print(f"\ngroup takeover after a clean leave: {takeover:.2f}s")


_CHILD = textwrap.dedent('''
    """A serving process of the asset that executes commands but dies before committing."""
    import json, os, sys, threading, time
    from flask_openfactory.wire.methods import ofa_method, spec_of
    from flask_openfactory.runtime import AssetRuntime, RuntimeSettings
    from flask_openfactory.transports import TransportOptions
    from flask_openfactory.transports.kafka import KafkaGroupReader

    cfg = json.loads(sys.argv[1])
    # Results reach the log, offsets never do: what a process killed between the two leaves.
    KafkaGroupReader.commit = lambda self, offset: None
    side_effects = open(cfg["side_effects"], "a", buffering=1)

    @ofa_method()
    def mark(n: int) -> int:
        side_effects.write(f"{os.getpid()} {n}\\n")
        return n

    runtime = AssetRuntime(RuntimeSettings(
        asset_uuid=cfg["asset"], transport_url="kafka://" + cfg["bootstrap"],
        transport_options=TransportOptions(topic=cfg["topic"], election="group", kafka_config=cfg["kafka_config"])))
    runtime.declare_method(spec_of(mark))
    runtime.start()
    owned = False
    deadline = time.monotonic() + 120  # the test kills this process long before
    while time.monotonic() < deadline:
        owns = runtime.owns_command_log
        if owns != owned:
            print("OWNS" if owns else "LOST", flush=True)
            owned = owns
        time.sleep(0.02)
    sys.exit(3)
''')


class Child:
    """The second OS process; its stdout lines are collected by a thread."""

    def __init__(self, script: Path, cfg: dict[str, Any], log: Path) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.log = log.open("w")
        self.proc = subprocess.Popen([sys.executable, str(script), json.dumps(cfg)], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.said: list[str] = []
        self.pump = threading.Thread(target=self._pump, name="child-stdout", daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, word: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while word not in self.said:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None and self.lines.empty():
                raise AssertionError(f"the child did not say {word!r} (said {self.said}, "
                                     f"exit {self.proc.poll()}); stderr in {self.log.name}")
            try:
                self.said.append(self.lines.get(timeout=min(remaining, 0.5)))
            except queue.Empty:
                pass

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)  # by the pid we started
        self.proc.wait(10)
        self.pump.join(5)  # ends at EOF of the dead process's stdout
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


def _runtime(broker: TansuBroker, topic: str, asset: str, calls: list[int]) -> AssetRuntime:
    @ofa_method()
    def mark(n: int) -> int:
        calls.append(n)
        return n

    runtime = AssetRuntime(RuntimeSettings(
        asset_uuid=asset, transport_url="kafka://" + broker.bootstrap, stop_timeout=5.0,
        transport_options=TransportOptions(topic=topic, election="group", kafka_config=dict(KAFKA_TEST_CONFIG))))
    runtime.declare_method(spec_of(mark))
    return runtime


def test_sigkilled_owner_process_is_replaced_and_its_finished_command_does_not_run_again(
        kafka_broker: TansuBroker, unique_topic: str, tmp_path: Path) -> None:
    # One partition: the sticky assignor then leaves it with the first member when
    # the second joins, so the killed process is the owner by construction.
    kafka_broker.create_topic(unique_topic, 1)
    asset = f"GRP-{uuid.uuid4().hex[:10]}"
    side_effects = tmp_path / "side-effects.txt"
    script = tmp_path / "owner.py"
    script.write_text(_CHILD)
    child = Child(script, {"asset": asset, "bootstrap": kafka_broker.bootstrap, "topic": unique_topic,
                           "kafka_config": KAFKA_TEST_CONFIG, "side_effects": str(side_effects)},
                  tmp_path / "owner.stderr")
    calls: list[int] = []
    survivor = _runtime(kafka_broker, unique_topic, asset, calls)
    try:
        child.expect("OWNS", 30)
        survivor.start()
        wait_for(lambda: (state := survivor.dispatcher_state()) is not None
                 and state.reader == KafkaGroupReader.__name__
                 and state.reader_stats["assignments"], 20, "the survivor joining the group")
        standing_by = survivor.dispatcher_state()
        assert standing_by is not None and not standing_by.owns and "LOST" not in child.said

        done_cid, done_value = command(asset, 1)
        send(kafka_broker, unique_topic, asset, done_value)
        wait_for(lambda: side_effects.exists() and side_effects.read_text().split() == [str(child.proc.pid), "1"],
                 10, "the owner process executing the command")
        results_on_topic(kafka_broker, unique_topic, 1, asset,
                         lambda found: any(r["correlation_id"] == done_cid for r in found), 10)

        child.kill()
        killed_at = time.monotonic()
        wait_for(lambda: survivor.owns_command_log, 30,
                 "the survivor taking over from the killed process")
        takeover = time.monotonic() - killed_at
        next_cid, next_value = command(asset, 2)
        send(kafka_broker, unique_topic, asset, next_value)
        found = results_on_topic(kafka_broker, unique_topic, 1, asset,
                                 lambda found: any(r["correlation_id"] == next_cid for r in found), 15)
        assert calls == [2]  # the finished command was not executed a second time
        assert side_effects.read_text().split() == [str(child.proc.pid), "1"]
        assert [r["correlation_id"] for r in found] == [done_cid, next_cid]
        assert all(r["status"] == "OK" for r in found)
        assert survivor.counters["commands_duplicate"] == 1 and survivor.counters["commands_ok"] == 1
        assert survivor.readiness()[0]
        print(f"\ngroup takeover after SIGKILL of the owner process: {takeover:.2f}s "
              f"(session.timeout.ms={KAFKA_TEST_CONFIG['consumer.session.timeout.ms']})")
    finally:
        child.kill()
        survivor.stop(5.0)


def test_a_command_sent_right_after_start_is_executed(kafka_broker: TansuBroker, unique_topic: str) -> None:
    """``start`` returns before the group's join completes; the command log's start must
    already be marked then, or the first owner starts past the command (it did)."""
    kafka_broker.create_topic(unique_topic, 3)
    asset = f"GRP-{uuid.uuid4().hex[:10]}"
    calls: list[int] = []
    runtime = _runtime(kafka_broker, unique_topic, asset, calls)
    try:
        runtime.start()
        owned_at_start = runtime.owns_command_log
        _, value = command(asset, 5)
        send(kafka_broker, unique_topic, asset, value)
        wait_for(lambda: calls == [5], 20, "the command executed once the join completes")
        print(f"\nowned when start returned: {owned_at_start}")
    finally:
        runtime.stop(5.0)
