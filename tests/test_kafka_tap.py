"""The executing worker's command reader fed by its follower (``transports/kafka/tap.py``).

Once it owns the log and has read up to where its tap starts, the command reader stops
fetching the partition itself and takes what the process's follower hands it. What must hold
whatever happens to that hand-over: every command runs once, in log order; its own consumer
fetches nothing while it is fed (the point of it: the executing worker reads each record
once); and when the follower fails or the executor falls behind, the reader reads by itself
again from where the tap stopped. Executions are counted by the method's own side effect.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from flask import Flask

from app_factory import build_app
from flask_openfactory import AssetBlueprint, SampleAttribute
from flask_openfactory.runtime import AssetRuntime
from flask_openfactory.testing import runtime_of
from flask_openfactory.transports import TransportOptions, create_transport
from flask_openfactory.transports.kafka import KafkaTransport
from flask_openfactory.transports.kafka import tap as tap_module
from flask_openfactory.wire.commands import command_record, new_envelope
from flask_openfactory.wire.protocol import SAMPLES, Record
from harness.broker import TansuBroker
from harness.waiting import wait_for
from kafka_config import KAFKA_TEST_CONFIG


@dataclass
class Machine:
    """What the method saw, in the order it ran, and a gate that can hold it."""

    calls: list[int] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)

    def blueprint(self) -> AssetBlueprint:
        bp = AssetBlueprint("tapped", __name__)
        bp.attribute(SampleAttribute("level", tag="Level", default=0))

        @bp.ofa_method(description="Note one call; call 0 waits for the test's gate.")
        def mark(n: int) -> int:
            if n == 0:
                self.gate.wait(30)
            self.calls.append(n)
            return n

        return bp


@dataclass
class Under:
    """The app, its asset and the other asset's producer that sends it commands."""

    app: Flask
    uuid: str
    machine: Machine
    sender: Producer
    topic: str

    @property
    def runtime(self) -> AssetRuntime:
        return runtime_of(self.app)

    def command(self, n: int) -> None:
        """``mark(n)`` as another asset sends it: a plain producer, no marks of ours."""
        record = command_record(self.uuid, "mark", new_envelope("CALLER", {"n": str(n)}))
        self.sender.produce(self.topic, key=self.uuid.encode(), value=record.to_wire())
        self.sender.poll(0)

    def neighbour(self, n: int) -> None:
        """A record of another asset in the same (only) partition."""
        record = Record.create("NEIGHBOUR", "temperature", n, tag="Temperature", type=SAMPLES)
        self.sender.produce(self.topic, key=b"NEIGHBOUR", value=record.to_wire())
        self.sender.poll(0)

    def reader_stats(self) -> dict[str, Any]:
        state = self.runtime.dispatcher_state()
        assert state is not None
        return dict(state.reader_stats)

    def tapped(self) -> bool:
        return bool(self.reader_stats().get("tapped"))

    def fetched(self) -> int:
        """Records the command reader's own consumer fetched so far."""
        return sum(self.reader_stats()["received"].values())

    def start_tapped(self) -> None:
        """Started, executing, and fed by the follower (a first command makes it catch up)."""
        self.runtime.start()
        wait_for(lambda: self.runtime.owns_command_log, 20, "the runtime owning the command log")
        self.command(-1)
        wait_for(lambda: self.machine.calls == [-1], 15, "the first command run")
        wait_for(self.tapped, 10, "the command reader fed by the follower")
        self.machine.calls.clear()


@pytest.fixture
def make(kafka_broker: TansuBroker, unique_topic: str, tmp_path: Path) -> Iterator[Callable[[], Under]]:
    kafka_broker.create_topic(unique_topic, 1)
    made: list[Under] = []

    def factory() -> Under:
        machine = Machine()
        app_uuid = f"OFA-TAP-{uuid.uuid4().hex[:10].upper()}"
        config = {
            "OPENFACTORY_APP_UUID": app_uuid,
            "OPENFACTORY_TRANSPORT_URL": f"kafka://{kafka_broker.bootstrap}",
            "OPENFACTORY_ASSETS_TOPIC": unique_topic,
            "OPENFACTORY_KAFKA_CONFIG": dict(KAFKA_TEST_CONFIG),
            "OPENFACTORY_KSQLDB_URL": None,
            "OPENFACTORY_LOCK_DIR": str(tmp_path / "locks"),
            "OPENFACTORY_STOP_TIMEOUT": 5.0,
        }
        app = build_app(__name__, config, blueprints=[machine.blueprint()], constructor=True,
                        add_api=False, add_cli=False)
        sender = Producer({"bootstrap.servers": kafka_broker.bootstrap, "partitioner": "murmur2_random",
                           "linger.ms": 0, "enable.idempotence": True})
        made.append(Under(app, app_uuid, machine, sender, unique_topic))
        return made[-1]

    yield factory
    for under in made:
        under.machine.gate.set()
        under.runtime.stop(5.0)
        under.sender.flush(5)


def test_fed_by_the_follower_the_executor_runs_every_command_once_in_order_and_fetches_nothing(
        make: Callable[[], Under]) -> None:
    under = make()
    under.start_tapped()
    fetched = under.fetched()
    with under.app.app_context():
        for n in range(1, 2001):
            under.runtime.set("level", n)  # this process's own writes, which the follower skips
            if n % 100 == 0:
                under.command(n // 100)
                under.neighbour(n)
    wait_for(lambda: len(under.machine.calls) >= 20, 20, "twenty commands run")
    assert under.machine.calls == list(range(1, 21))
    assert under.fetched() == fetched, "the command reader fetched the partition itself while fed"
    assert under.tapped()


class Failing:
    """A consumer whose next poll fails with a fatal Kafka error; the rest goes to the real one."""

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer

    def poll(self, timeout: float) -> Any:
        raise KafkaException(KafkaError(KafkaError._FATAL, "injected by the test"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def test_a_follower_failing_under_the_tap_loses_no_command_and_runs_none_twice(
        make: Callable[[], Under], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="flask_openfactory.kafka")
    under = make()
    under.start_tapped()
    followed = under.runtime._state

    def break_follower() -> None:  # its next fetch fails, as on a fatal client error
        wait_for(lambda: followed._follower is not None, 10, "a follower running")
        follower = followed._follower
        follower._consumer = Failing(follower._consumer)  # type: ignore[attr-defined,union-attr]

    faults = 0
    for n in range(1, 101):
        under.command(n)
        if n in (20, 60):
            wait_for(lambda n=n: len(under.machine.calls) >= n - 5, 15, "the commands before the fault run")
            wait_for(under.tapped, 10, "the command reader fed by the follower")
            break_follower()
            faults += 1
            wait_for(lambda faults=faults: caplog.text.count("reads by itself again") >= faults, 10,
                     "the command reader leaving the failed follower's tap")
    wait_for(lambda: len(under.machine.calls) >= 100, 30, "every command run")
    assert under.machine.calls == list(range(1, 101))
    assert under.runtime.counters["follow_errors"] >= 2  # both faults happened
    wait_for(under.tapped, 10, "the command reader fed by the reopened follower")
    before = len(under.machine.calls)
    under.command(101)
    wait_for(lambda: len(under.machine.calls) > before, 15, "a command after the faults")
    assert under.machine.calls == list(range(1, 102))
    assert "recreated or truncated" not in caplog.text  # and went on where each stopped, no false alarm


def test_a_tap_the_busy_executor_falls_behind_on_is_dropped_and_loses_nothing(
        make: Callable[[], Under], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(tap_module, "LIMIT", 5)
    caplog.set_level(logging.DEBUG, logger="flask_openfactory.kafka")
    under = make()
    under.start_tapped()
    under.command(0)  # held at the gate: the commands after it wait, and the tap fills
    for n in range(1, 41):
        under.command(n)
    under.sender.flush(10)
    end = under.runtime.transport.end_position(under.uuid)
    wait_for(lambda: under.runtime.follower_state().applied >= end, 15, "the follower reading past the held command")
    under.machine.gate.set()
    wait_for(lambda: len(under.machine.calls) >= 41, 30, "every command run")
    assert under.machine.calls == list(range(41))
    assert "reads by itself again" in caplog.text  # the full tap was dropped
    assert "recreated or truncated" not in caplog.text  # and the reader went on where it stopped
    wait_for(under.tapped, 10, "the command reader fed by the follower again")


def _tap_transport(kafka_broker: TansuBroker, topic: str, tmp_path: Path) -> KafkaTransport:
    kafka_broker.create_topic(topic, 1)
    transport = create_transport(f"kafka://{kafka_broker.bootstrap}", TransportOptions(
        topic=topic, kafka_config=dict(KAFKA_TEST_CONFIG), lock_dir=str(tmp_path)))
    assert isinstance(transport, KafkaTransport)
    return transport


def test_a_new_owner_is_fed_by_the_follower_from_its_first_read(
        kafka_broker: TansuBroker, unique_topic: str, tmp_path: Path) -> None:
    """The tap opens as soon as the reader owns the log, not once it has caught up: records written
    meanwhile are not fetched twice (the reader's own consumer chased the follower before)."""
    transport = _tap_transport(kafka_broker, unique_topic, tmp_path)
    asset = f"TAP-{uuid.uuid4().hex[:8]}"
    sender = Producer({"bootstrap.servers": kafka_broker.bootstrap, "partitioner": "murmur2_random"})
    follower = transport.follow(asset, skip_own_writes=True)
    reader = transport.command_reader(asset, "executors")
    try:
        wait_for(lambda: (reader.poll(0.05), reader.owns)[1], 10, "the reader owning the log")
        wait_for(lambda: (reader.poll(0.05), reader.stats()["tapped"])[1], 10,
                 "the reader fed by the follower (caught_up() never asked)")
        for n in range(3):
            record = Record.create(asset, "mark_CMD", f"call-{n}", tag="Method.Command", type="OpenFactory")
            sender.produce(unique_topic, key=asset.encode(), value=record.to_wire())
        assert sender.flush(10) == 0
        taken: list[int] = []

        def step() -> bool:
            follower.poll(0.05)  # hands the commands to the tap
            taken.extend(entry.offset for entry in reader.poll(0.05) if entry.record is not None)
            return len(taken) >= 3

        wait_for(step, 10, "the three commands taken from the tap")
        assert taken == [0, 1, 2]
        assert reader.stats()["received"] == {}  # its own consumer fetched none of them
    finally:
        reader.close()
        follower.close()
        transport.close(2.0)


def test_a_reader_ahead_of_the_follower_takes_nothing_twice_from_its_tap(
        kafka_broker: TansuBroker, unique_topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tap opens at the follower's position; a reader that already read past it (the tap was
    not to be had while the follower had not polled yet) must not handle those entries again."""
    transport = _tap_transport(kafka_broker, unique_topic, tmp_path)
    asset = f"TAP-{uuid.uuid4().hex[:8]}"
    sender = Producer({"bootstrap.servers": kafka_broker.bootstrap, "partitioner": "murmur2_random"})

    def send(n: int) -> None:
        record = Record.create(asset, "mark_CMD", f"call-{n}", tag="Method.Command", type="OpenFactory")
        sender.produce(unique_topic, key=asset.encode(), value=record.to_wire())
        assert sender.flush(10) == 0

    follower = transport.follow(asset, skip_own_writes=True)  # anchored at the end, not polled yet
    tap_open = threading.Event()  # no tap until the reader has read the three commands by itself
    open_tap = transport.open_tap
    monkeypatch.setattr(transport, "open_tap", lambda key: open_tap(key) if tap_open.is_set() else None)
    reader = transport.command_reader(asset, "executors")
    try:
        wait_for(lambda: (reader.poll(0.05), reader.owns)[1], 10, "the reader owning the log")
        for n in range(3):
            send(n)
        read: list[int] = []

        def collect(timeout: float = 0.05) -> None:
            read.extend(entry.offset for entry in reader.poll(timeout) if entry.record is not None)

        wait_for(lambda: (collect(), len(read) >= 3)[1], 10, "the reader reading the three commands")
        assert not reader.stats()["tapped"]
        tap_open.set()
        wait_for(reader.caught_up, 10, "the reader caught up")
        wait_for(lambda: (collect(), reader.stats()["tapped"])[1], 10, "the reader fed by the follower")
        assert follower.position == read[0]  # the tap starts before what the reader has read
        followed: list[Record] = []
        wait_for(lambda: (followed.extend(follower.poll(0.05)), len(followed) >= 3)[1], 10,
                 "the follower reading the three commands (and feeding them to the tap)")
        send(3)
        wait_for(lambda: (followed.extend(follower.poll(0.05)), len(followed) >= 4)[1], 10,
                 "the follower reading the fourth command")
        wait_for(lambda: (collect(), len(read) >= 4)[1], 10, "the reader taking the fourth from the tap")
        collect(0.2)
        assert reader.stats()["tapped"]
        assert len(read) == len(set(read)) == 4, read
    finally:
        reader.close()
        follower.close()
        transport.close(2.0)
