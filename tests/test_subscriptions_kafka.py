"""Issue 7 acceptance: live subscriptions to another asset, on the real test broker.

Each test has its own topic with three partitions. The watched asset and its
neighbours are plain producers writing contract records (as any asset on the
platform would); the watching app is a Flask app with the extension, its
runtime started in this process. A subscription must fetch only the watched
asset's partition, deliver that asset's updates in log order and at least
once, start with the asset's current state (read back from the topic: there
is no ksqlDB here), survive a takeover by another process of the same app,
and, with ``every_worker=True``, deliver in every runtime.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from flask import Flask, current_app

from app_factory import build_app
from flask_openfactory import AssetBlueprint, Record
from flask_openfactory.runtime import AssetRuntime
from flask_openfactory.transports.kafka import KafkaLockedReader
from flask_openfactory.transports.partitioning import partition_for_key
from flask_openfactory.wire.commands import command_record, new_envelope
from harness.broker import TansuBroker
from harness.waiting import wait_for
from kafka_config import KAFKA_TEST_CONFIG
from ksqldb_standin import running_standin

PARTITIONS = 3
EXTENSION = "subscription_test"  # app.extensions key holding what the handlers saw


# -- the watched asset and its neighbours ----------------------------------------------


def keys_in(partition: int, count: int, prefix: str) -> list[str]:
    """``count`` fresh asset UUIDs whose records land in ``partition``."""
    found: list[str] = []
    while len(found) < count:
        key = f"{prefix}-{uuid.uuid4().hex[:10].upper()}"
        if partition_for_key(key.encode(), PARTITIONS) == partition:
            found.append(key)
    return found


@dataclass
class Assets:
    """The watched asset, a neighbour sharing its partition, one neighbour in each other partition."""

    watched: str
    partition: int
    same_partition: str
    elsewhere: list[str]

    @classmethod
    def pick(cls) -> Assets:
        watched = keys_in(1, 1, "MACHINE")[0]
        return cls(watched, 1, keys_in(1, 1, "NEIGHBOUR")[0], [keys_in(p, 1, "OTHER")[0] for p in (0, 2)])

    @property
    def neighbours(self) -> list[str]:
        return [self.same_partition, *self.elsewhere]


class Writer:
    """Writes contract records as another asset would (plain producer, Java partitioner)."""

    def __init__(self, broker: TansuBroker, topic: str) -> None:
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": broker.bootstrap, "partitioner": "murmur2_random",
                                  "linger.ms": 0, "enable.idempotence": True})

    def record(self, record: Record) -> Record:
        while True:
            try:
                self.producer.produce(self.topic, key=record.asset_uuid.encode(), value=record.to_wire())
                break
            except BufferError:
                self.producer.poll(0.01)
        self.producer.poll(0)
        return record

    def sample(self, asset: str, attr: str, value: float) -> Record:
        return self.record(Record.create(asset, attr, value, tag="Position", type="Samples"))

    def event(self, asset: str, attr: str, value: str) -> Record:
        return self.record(Record.create(asset, attr, value, tag="Execution", type="Events"))

    def flush(self) -> None:
        assert self.producer.flush(15) == 0, "records not delivered to the broker"


# -- the watching app ------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    subscription: str
    record: Record
    at: float  # time.monotonic() in the handler


@dataclass
class Seen:
    """What one app's handlers were given, in call order."""

    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, subscription: str, record: Record) -> None:
        with self.lock:
            self.deliveries.append(Delivery(subscription, record, time.monotonic()))

    def of(self, subscription: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.subscription == subscription]

    def values(self, subscription: str, attr: str) -> list[Any]:
        return [d.record.value for d in self.of(subscription) if d.record.id == attr]


def _seen() -> Seen:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


def _keep_seen(app: Flask) -> None:
    """Where the handlers record what they were given, set before the extension."""
    app.extensions[EXTENSION] = Seen()


def watcher_blueprint(*, every_worker: bool = False) -> AssetBlueprint:
    """Subscriptions to the asset named by ``WATCHED_UUID``: every attribute, and ``position_x`` alone."""
    bp = AssetBlueprint("watcher", __name__)

    def watched() -> str:
        return str(current_app.config["WATCHED_UUID"])

    def handle(name: str, record: Record) -> None:
        _seen().add(name, record)
        hold = current_app.config.get("HOLD_HANDLER")
        if hold is not None:  # a test keeps the handler busy
            hold(name, record)

    @bp.subscribe(watched, every_worker=every_worker)
    def everything(record: Record) -> None:
        handle("everything", record)

    @bp.subscribe(watched, attribute="position_x", every_worker=every_worker)
    def x_only(record: Record) -> None:
        handle("x_only", record)

    return bp


@dataclass
class Watcher:
    app: Flask
    readers: list[KafkaLockedReader]

    @property
    def runtime(self) -> AssetRuntime:
        return self.app.extensions["openfactory"].runtime  # type: ignore[no-any-return]

    @property
    def seen(self) -> Seen:
        return self.app.extensions[EXTENSION]  # type: ignore[no-any-return]


@pytest.fixture
def make_watcher(kafka_broker: TansuBroker, tmp_path: Path) -> Iterator[Callable[..., Watcher]]:
    """``make_watcher(topic, app_uuid, watched, every_worker=...)``; every runtime is stopped at teardown."""
    made: list[Watcher] = []

    def make(topic: str, app_uuid: str, watched: str, *, every_worker: bool = False,
             ksqldb_url: str | None = None) -> Watcher:
        config = {
            "OPENFACTORY_APP_UUID": app_uuid,
            "OPENFACTORY_TRANSPORT_URL": f"kafka://{kafka_broker.bootstrap}",
            "OPENFACTORY_ASSETS_TOPIC": topic,
            "OPENFACTORY_KAFKA_CONFIG": dict(KAFKA_TEST_CONFIG),
            "OPENFACTORY_KSQLDB_URL": ksqldb_url,  # None: the snapshot is read back from the topic
            "OPENFACTORY_LOCK_DIR": str(tmp_path / "locks"),
            "OPENFACTORY_STOP_TIMEOUT": 5.0,
            "WATCHED_UUID": watched,
        }
        app = build_app(__name__, config, before_extension=_keep_seen,
                        blueprints=[watcher_blueprint(every_worker=every_worker)],
                        constructor=True, add_api=False, add_cli=False)
        watcher = Watcher(app, [])
        transport = watcher.runtime.transport
        open_reader = transport.watch_reader

        def capture(asset_uuid: str, group: str) -> Any:  # keep the readers to look at what they fetched
            reader = open_reader(asset_uuid, group)
            watcher.readers.append(reader)
            return reader

        transport.watch_reader = capture  # type: ignore[method-assign]
        made.append(watcher)
        return watcher

    yield make
    for watcher in made:
        watcher.runtime.stop(5.0)


def contiguous_run(values: list[Any]) -> tuple[int, int]:
    """``(first, last)`` when ``values`` are the integers first..last in order, each once; fails otherwise."""
    assert values, "nothing delivered"
    first = int(values[0])
    assert values == [float(v) for v in range(first, first + len(values))], (
        f"not one run in order without gaps or repeats: {values}")
    return first, first + len(values) - 1


def watched_asset_ready(broker: TansuBroker, topic: str) -> tuple[Assets, Writer, str]:
    """A fresh topic whose watched asset has a state (``status`` READY), and a watching app's UUID."""
    broker.create_topic(topic, PARTITIONS)
    assets = Assets.pick()
    writer = Writer(broker, topic)
    writer.event(assets.watched, "status", "READY")
    writer.flush()
    return assets, writer, f"WATCHER-{uuid.uuid4().hex[:8]}"


# -- tests ---------------------------------------------------------------------------------


def test_a_subscription_reads_only_the_watched_partition_in_order_after_the_initial_state(
        kafka_broker: TansuBroker, unique_topic: str, make_watcher: Callable[..., Watcher]) -> None:
    kafka_broker.create_topic(unique_topic, PARTITIONS)
    assets = Assets.pick()
    writer = Writer(kafka_broker, unique_topic)
    # The watched asset's state before anyone subscribes, plus records a subscription must never hand over.
    initial = [writer.sample(assets.watched, "position_x", -1.0), writer.event(assets.watched, "status", "READY")]
    writer.record(Record.create(assets.watched, "move_axis", '{"description": "", "arguments": []}',
                                tag="Method", type="Method"))
    for neighbour in assets.neighbours:
        writer.sample(neighbour, "position_x", 1000.0)
    writer.flush()

    # The watching app's own records go elsewhere, so that the count below is exact.
    watcher = make_watcher(unique_topic, keys_in(0, 1, "WATCHER")[0], assets.watched)
    started = time.monotonic()
    watcher.runtime.start()
    wait_for(lambda: len(watcher.seen.of("everything")) >= 2 and watcher.seen.of("x_only"), 20,
             "the initial state delivered")
    print(f"\ninitial state delivered {1000 * (watcher.seen.of('everything')[1].at - started):.0f} ms "
          "after start() was called")
    first = [d.record for d in watcher.seen.of("everything")]
    assert sorted((r.id, r.value, r.timestamp) for r in first) == sorted((r.id, r.value, r.timestamp) for r in initial)
    assert [(d.record.id, d.record.value) for d in watcher.seen.of("x_only")] == [("position_x", -1.0)]
    assert watcher.runtime.subscriptions_settled(10)

    # Updates of the watched asset amid neighbour traffic on every partition (its own included),
    # and a command and a result on the watched asset, which are not attribute updates.
    updates: list[Record] = []
    neighbour_records = 0
    for i in range(300):
        updates.append(writer.sample(assets.watched, "position_x", float(i)))
        if i % 50 == 25:
            updates.append(writer.event(assets.watched, "status", f"RUN-{i}"))
        if i == 100:
            writer.record(command_record(assets.watched, "home", new_envelope("SOMEONE")))
            writer.record(Record.create(assets.watched, "home_RESULT", '{"status": "OK"}',
                                        tag="Method.Result", type="OpenFactory"))
        for neighbour in assets.neighbours:
            writer.sample(neighbour, "position_x", float(i))
            neighbour_records += 1
    writer.flush()
    wait_for(lambda: 299.0 in watcher.seen.values("x_only", "position_x"), 30, "the last update delivered")
    assert watcher.runtime.subscriptions_settled(10)

    # In order, each once (nothing forced a redelivery), and nothing but the watched asset's attributes.
    delivered = [d.record for d in watcher.seen.of("everything")][len(initial):]
    assert [(r.id, r.value, r.timestamp) for r in delivered] == [(r.id, r.value, r.timestamp) for r in updates]
    assert {r.asset_uuid for d in watcher.seen.deliveries for r in [d.record]} == {assets.watched}
    assert contiguous_run(watcher.seen.values("x_only", "position_x")[1:]) == (0, 299)
    assert {d.record.id for d in watcher.seen.of("x_only")} == {"position_x"}

    # Each subscription fetched the watched asset's partition only: the neighbour sharing it
    # was fetched and dropped, the others were never fetched.
    assert len(watcher.readers) == 2
    same_partition = 300  # the neighbour's updates (its first record came before the start position)
    for reader in watcher.readers:
        assert set(reader.received) == {assets.partition}, reader.received
        # exactly what was written there after the start: the updates, the command and result, the neighbour's
        assert reader.received[assets.partition] == len(updates) + 2 + same_partition, reader.received
    print(f"each reader fetched {[r.received for r in watcher.readers]} (partition: records); "
          f"{neighbour_records} neighbour records were written, {same_partition} of them in the watched partition")


def test_a_new_process_delivers_what_was_written_while_none_ran_and_takes_over_live(
        kafka_broker: TansuBroker, unique_topic: str, make_watcher: Callable[..., Watcher]) -> None:
    assets, writer, app_uuid = watched_asset_ready(kafka_broker, unique_topic)

    # 1. The first process delivers 0..49, then stops; 50..99 are written while nothing runs.
    first = make_watcher(unique_topic, app_uuid, assets.watched)
    first.runtime.start()
    wait_for(lambda: first.seen.of("everything"), 20, "the initial state delivered by the first process")
    for i in range(50):
        writer.sample(assets.watched, "position_x", float(i))
    writer.flush()
    # Each subscription has its own reader, and one may fetch later than the other: wait for both.
    wait_for(lambda: all(49.0 in first.seen.values(name, "position_x") for name in ("everything", "x_only")),
             20, "0..49 delivered by both subscriptions")
    first.runtime.stop(5.0)
    for i in range(50, 100):
        writer.sample(assets.watched, "position_x", float(i))
    writer.flush()

    # 2. A second process of the same app resumes from the committed position.
    second = make_watcher(unique_topic, app_uuid, assets.watched)
    started = time.monotonic()
    second.runtime.start()
    wait_for(lambda: all(99.0 in second.seen.values(name, "position_x") for name in ("everything", "x_only")),
             30, "50..99 delivered by the new process")
    resumed = second.seen.of("x_only")[0].at - started
    caught_up = [d for d in second.seen.of("x_only") if d.record.value == 99.0][0].at - started
    for name in ("everything", "x_only"):
        assert contiguous_run(first.seen.values(name, "position_x")) == (0, 49)
        start, end = contiguous_run(second.seen.values(name, "position_x"))
        assert start <= 50 and end == 99, (name, start, end)
    # The state the log did not repeat (status) came after the backlog, once.
    assert [d.record.value for d in second.seen.of("everything") if d.record.id == "status"] == ["READY"]
    print(f"\nrestart: the new process delivered its first backlog update {1000 * resumed:.0f} ms and "
          f"all 50 written while none ran {1000 * caught_up:.0f} ms after start(); "
          f"{50 - start} already delivered update(s) delivered again")

    # 3. Live takeover: a third process stands by while updates stream; the second one stops mid-stream.
    third = make_watcher(unique_topic, app_uuid, assets.watched)
    third.runtime.start()
    stop_at, last, rate = 150, 250, 100.0
    stopped: dict[str, float] = {}

    def stop_second() -> None:
        stopped["begin"] = time.monotonic()
        second.runtime.stop(5.0)
        stopped["end"] = time.monotonic()

    stopper = threading.Thread(target=stop_second, name="stop-second")
    begin = time.monotonic()
    for n, i in enumerate(range(100, last)):
        if i == stop_at:
            stopper.start()
        delay = begin + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the stream, not waiting for a condition
        writer.sample(assets.watched, "position_x", float(i))
    writer.flush()
    stopper.join(10)
    wait_for(lambda: all(float(last - 1) in third.seen.values(name, "position_x") for name in ("everything", "x_only")),
             30, "the stream delivered by the process that took over")
    for name in ("everything", "x_only"):
        before = second.seen.values(name, "position_x")
        after = third.seen.values(name, "position_x")
        _, handed = contiguous_run(before)
        taken, end = contiguous_run(after)
        assert end == last - 1
        assert taken <= handed + 1, f"{name}: updates {handed + 1}..{taken - 1} were never delivered"
    takeover = third.seen.of("x_only")[0].at - stopped["begin"]
    assert takeover > 0, "the standby process delivered updates before the owner stopped"
    print(f"live takeover: stop() took {1000 * (stopped['end'] - stopped['begin']):.0f} ms; the standby "
          f"delivered its first update {1000 * takeover:.0f} ms after stop() began "
          f"({handed - taken + 1} update(s) delivered by both)")


def test_updates_a_stop_left_undelivered_are_delivered_by_the_next_process(
        kafka_broker: TansuBroker, unique_topic: str, make_watcher: Callable[..., Watcher]) -> None:
    """A stop that cuts a batch short must not commit it: what was read but not handled comes again."""
    assets, writer, app_uuid = watched_asset_ready(kafka_broker, unique_topic)
    first = make_watcher(unique_topic, app_uuid, assets.watched)
    first.runtime.start()
    wait_for(lambda: first.seen.of("everything") and (duties := first.runtime.duties_state()) is not None
             and len(duties.runners) == 2, 20, "the subscriptions running")
    duties = first.runtime.duties_state()
    assert duties is not None
    runners = {r.name: r for r in duties.runners}
    held: set[str] = set()

    def hold(name: str, record: Record) -> None:
        """At 10, stay in the handler until the subscription is told to stop."""
        if record.value == 10.0:
            held.add(name)
            wait_for(lambda: runners[name].stopping, 20, f"{name} told to stop")

    first.app.config["HOLD_HANDLER"] = hold
    for i in range(50):
        writer.sample(assets.watched, "position_x", float(i))
    writer.flush()
    wait_for(lambda: held == {"everything", "x_only"}, 20, "both handlers busy with update 10")
    first.runtime.stop(5.0)
    for name in ("everything", "x_only"):
        assert contiguous_run(first.seen.values(name, "position_x")) == (0, 10), name

    second = make_watcher(unique_topic, app_uuid, assets.watched)
    second.runtime.start()
    wait_for(lambda: all(49.0 in second.seen.values(name, "position_x") for name in ("everything", "x_only")),
             30, "the rest delivered by the next process")
    for name in ("everything", "x_only"):
        start, end = contiguous_run(second.seen.values(name, "position_x"))
        assert start <= 11 and end == 49, f"{name}: updates 11..{start - 1} were read, never handled, and skipped"


def test_every_worker_subscriptions_deliver_in_each_runtime(
        kafka_broker: TansuBroker, unique_topic: str, make_watcher: Callable[..., Watcher]) -> None:
    kafka_broker.create_topic(unique_topic, PARTITIONS)
    assets = Assets.pick()
    writer = Writer(kafka_broker, unique_topic)
    writer.sample(assets.watched, "position_x", -1.0)
    writer.flush()
    app_uuid = f"CACHE-{uuid.uuid4().hex[:8]}"
    workers = [make_watcher(unique_topic, app_uuid, assets.watched, every_worker=True) for _ in range(2)]
    for worker in workers:
        worker.runtime.start()
    for worker in workers:
        wait_for(lambda worker=worker: worker.seen.values("x_only", "position_x") == [-1.0], 20,
                 "the current state delivered in each runtime")
        assert worker.runtime.subscriptions_settled(10)
    owners = [w for w in workers if w.runtime.owns_command_log]
    assert len(owners) == 1, "one runtime executes, the other stands by: both must deliver"

    for i in range(100):
        writer.sample(assets.watched, "position_x", float(i))
        writer.sample(assets.same_partition, "position_x", float(i))
    writer.flush()
    for worker in workers:
        # Written within a few milliseconds: many updates share a timestamp, and each counts.
        wait_for(lambda worker=worker: all(99.0 in worker.seen.values(name, "position_x")
                                           for name in ("everything", "x_only")),
                 20, "99 delivered by both subscriptions in each runtime")
        for name in ("everything", "x_only"):
            assert worker.seen.values(name, "position_x") == [-1.0, *map(float, range(100))], name
        assert {d.record.asset_uuid for d in worker.seen.deliveries} == {assets.watched}


def test_the_initial_state_comes_from_ksqldb_when_it_is_configured(
        kafka_broker: TansuBroker, unique_topic: str, make_watcher: Callable[..., Watcher]) -> None:
    """ksqlDB (here the stand-in speaking its REST formats) holds a value the topic never had."""
    kafka_broker.create_topic(unique_topic, PARTITIONS)
    assets = Assets.pick()
    with running_standin(unique_topic) as standin:
        standin.set_attribute(assets.watched, "position_x", 42.0, type="Samples", tag="Position",
                              timestamp="2026-11-22T10:00:00.000Z")
        watcher = make_watcher(unique_topic, keys_in(0, 1, "WATCHER")[0], assets.watched,
                               ksqldb_url=standin.url)
        watcher.runtime.start()
        wait_for(lambda: watcher.seen.values("x_only", "position_x") == [42.0], timeout=15,
                 what="the current state from ksqlDB")
        asked = [s for s in standin.statements("/query") if assets.watched in s]
        assert asked, f"ksqlDB was not asked for {assets.watched}: {standin.statements('/query')}"
        writer = Writer(kafka_broker, unique_topic)
        writer.sample(assets.watched, "position_x", 43.0)
        writer.flush()
        wait_for(lambda: watcher.seen.values("x_only", "position_x") == [42.0, 43.0], timeout=15,
                 what="the live update after the state")
