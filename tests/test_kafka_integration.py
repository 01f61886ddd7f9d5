"""The demo app as an OpenFactory asset on a real Kafka-protocol broker.

Everything here goes through real sockets: the Tansu broker of ``conftest``
(each test on its own topic), plain confluent-kafka clients standing in for
the platform and for other assets, the Flask test client for HTTP, the
``flask`` CLI in a subprocess, and the ksqlDB stand-in over loopback HTTP.
Records are checked byte for byte against openfactory-contract.md, because
the platform's own tools read them without our library.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from flask import Flask

import demo
from demo import machine as demo_machine
from flask_openfactory import AssetBlueprint, SampleAttribute, TransportError
from flask_openfactory.runtime import AssetRuntime, RuntimeStopped
from flask_openfactory.runtime.dispatch import DispatcherState
from flask_openfactory.transports.kafka import KafkaGroupReader, KafkaLockedReader
from flask_openfactory.transports.partitioning import partition_for_key
from harness.broker import TansuBroker
from harness.procfs import connections_to
from harness.waiting import wait_for
from kafka_config import KAFKA_TEST_CONFIG
from ksqldb_standin import running_standin

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RECORD_FIELDS = {"ID", "VALUE", "TAG", "TYPE", "attributes"}
RESULT_FIELDS = {"correlation_id", "sender_uuid", "status", "result", "error", "duration_ms"}
RECORD_TYPES = {"Samples", "Events", "Condition", "Method", "OpenFactory"}
FAST_CONSUMER = {"fetch.wait.max.ms": 10, "fetch.min.bytes": 1, "enable.auto.commit": False}


# -- helpers ---------------------------------------------------------------------------




def now_ts() -> str:
    """The contract's timestamp, built here independently of the library."""
    moment = datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def record_value(attr_id: str, value: Any, *, tag: str, type: str, timestamp: str | None = None) -> bytes:
    return json.dumps({"ID": attr_id, "VALUE": value, "TAG": tag, "TYPE": type,
                       "attributes": {"timestamp": timestamp or now_ts()}}).encode()


def envelope(cid: Any, sender: Any, arguments: Any, **extra: Any) -> dict[str, Any]:
    header = {"correlation_id": cid, "sender_uuid": sender,
              "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"), "signature": None}
    return {"header": header, "arguments": arguments, **extra}


def command_value(method: str, env: Any) -> bytes:
    """A ``<method>_CMD`` record as another asset writes it (contract section 5)."""
    text = env if isinstance(env, str) else json.dumps(env)
    return record_value(f"{method}_CMD", text, tag="Method.Command", type="OpenFactory")


def plain_producer(broker: TansuBroker, **config: Any) -> Producer:
    return Producer({"bootstrap.servers": broker.bootstrap, "partitioner": "murmur2_random",
                     "linger.ms": 0, **config})


@dataclass(frozen=True)
class Seen:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    def doc(self) -> dict[str, Any]:
        assert self.value is not None
        data = json.loads(self.value)
        assert isinstance(data, dict)
        return data


class TopicReader:
    """A plain consumer of every partition of a topic from the beginning (no group join)."""

    def __init__(self, broker: TansuBroker, topic: str, partitions: int) -> None:
        self.consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                                  **FAST_CONSUMER})
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        self.seen: list[Seen] = []

    def read_until(self, done: Callable[[list[Seen]], bool], timeout: float, what: str) -> list[Seen]:
        deadline = time.monotonic() + timeout
        while not done(self.seen):
            if time.monotonic() >= deadline:
                raise AssertionError(f"{what}: not on the topic within {timeout:g} s")
            for message in self.consumer.consume(1000, 0.1):
                if message.error() is None:
                    self.seen.append(Seen(message.partition(), message.offset(), message.key(), message.value()))
        return self.seen

    def close(self) -> None:
        self.consumer.close()


def of_key(seen: list[Seen], key: str) -> list[Seen]:
    return [s for s in seen if s.key == key.encode()]


def results(seen: list[Seen], key: str) -> list[dict[str, Any]]:
    """Decoded ``_RESULT`` values of one asset, in log order."""
    out = []
    for s in of_key(seen, key):
        if s.value is None:
            continue
        try:
            doc = json.loads(s.value)
        except ValueError:
            continue
        if isinstance(doc, dict) and str(doc.get("ID", "")).endswith("_RESULT"):
            out.append({"ID": doc["ID"], **json.loads(doc["VALUE"])})
    return out


def result_for(cid: str, key: str) -> Callable[[list[Seen]], bool]:
    return lambda seen: any(r["correlation_id"] == cid for r in results(seen, key))


class Probe:
    """A method with an observable side effect, to count executions exactly."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def blueprint(self) -> AssetBlueprint:
        bp = AssetBlueprint("probe", __name__)
        last = bp.attribute(SampleAttribute("last_mark", tag="Probe.Mark", default=0))

        @bp.ofa_method(description="Record one call (the test's side effect).")
        def mark(n: int) -> int:
            with self.lock:
                self.calls.append(n)
            last.set(n)
            return n

        return bp


@dataclass
class AppUnderTest:
    app: Flask
    uuid: str
    topic: str
    partitions: int
    probe: Probe

    @property
    def runtime(self) -> AssetRuntime:
        return self.app.extensions["openfactory"].runtime  # type: ignore[no-any-return]

    @property
    def partition(self) -> int:
        return partition_for_key(self.uuid.encode(), self.partitions)


def production_env(broker_address: str, app_uuid: str, lock_dir: Path, *, topic: str | None = None,
                   election: str = "lock", ksqldb_url: str | None = None) -> dict[str, str]:
    """The platform's environment plus our ``FLASK_OPENFACTORY_<KEY>=<json>`` overrides."""
    env = {
        "KAFKA_BROKER": broker_address,
        "APP_UUID": app_uuid,
        "SECRET_KEY": "x",
        "FLASK_OPENFACTORY_KAFKA_CONFIG": json.dumps(KAFKA_TEST_CONFIG),
        "FLASK_OPENFACTORY_LOCK_DIR": json.dumps(str(lock_dir)),
        "FLASK_OPENFACTORY_KAFKA_ELECTION": json.dumps(election),
        "FLASK_OPENFACTORY_STOP_TIMEOUT": "5",
    }
    if topic is not None:
        env["FLASK_OPENFACTORY_ASSETS_TOPIC"] = json.dumps(topic)
    if ksqldb_url is not None:
        env["KSQLDB_URL"] = ksqldb_url
    return env


_PLATFORM_VARS = ("KSQLDB_URL", "APPLICATION_VERSION", "APPLICATION_MANUFACTURER", "APPLICATION_LICENSE",
                  "SWARM_REPLICAS", "SWARM_TASK_SLOT", "OPENFACTORY_ROOT_PATH", "OPENFACTORY_SETTINGS")


@pytest.fixture
def make_app(kafka_broker: TansuBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[
        Callable[..., AppUnderTest]]:
    """``make_app(topic, partitions, election=...)``: the demo app in its production config.

    The topic is created here with ``partitions``; every runtime started is stopped at teardown.
    """
    made: list[AppUnderTest] = []
    for name in [*_PLATFORM_VARS, *(k for k in os.environ if k.startswith("FLASK_"))]:
        monkeypatch.delenv(name, raising=False)

    def make(topic: str, partitions: int, *, election: str = "lock", create: bool = True) -> AppUnderTest:
        if create:
            kafka_broker.create_topic(topic, partitions)
        app_uuid = f"OFA-IT-{uuid.uuid4().hex[:12].upper()}"
        for key, value in production_env(kafka_broker.bootstrap, app_uuid, tmp_path / "locks", topic=topic,
                                         election=election).items():
            monkeypatch.setenv(key, value)
        app = demo.create_app("production")
        probe = Probe()
        app.register_blueprint(probe.blueprint())
        made.append(AppUnderTest(app, app_uuid, topic, partitions, probe))
        return made[-1]

    yield make
    for under_test in made:
        under_test.runtime.stop(5.0)


def command_reader(runtime: AssetRuntime) -> DispatcherState:
    """The dispatcher's state, its Kafka command reader open."""
    dispatcher = runtime.dispatcher_state()
    assert dispatcher is not None and dispatcher.reader is not None
    assert dispatcher.reader in (KafkaLockedReader.__name__, KafkaGroupReader.__name__), dispatcher.reader
    return dispatcher


def wait_owner(runtime: AssetRuntime, timeout: float = 20.0) -> float:
    """Seconds until this process executes the asset's commands."""
    start = time.monotonic()
    wait_for(lambda: runtime.owns_command_log, timeout,
             "the runtime owning the command log")
    return time.monotonic() - start


# -- 1. golden records ---------------------------------------------------------------


def test_golden_records_on_the_wire(make_app: Callable[..., AppUnderTest], kafka_broker: TansuBroker,
                                    unique_topic: str) -> None:
    t0 = now_ts()
    under_test = make_app(unique_topic, 3)
    app, asset = under_test.app, under_test.uuid
    runtime = under_test.runtime
    runtime.start()
    with app.app_context():
        demo_machine.position_x.set(12.5)
        demo_machine.status.set("SETUP")
    http_cid = str(uuid.uuid4())
    response = app.test_client().post("/ofa/methods/move_axis", json={"x": 1.5, "y": -2.0, "speed": 250},
                                      headers={"X-Correlation-ID": http_cid, "X-OpenFactory-Sender": "HTTP-CALLER"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["status"] == "OK"

    # Another asset calls a method the platform's way: a plain record on our key.
    cmd_cid, sender = str(uuid.uuid4()), "OTHER-ASSET-7"
    producer = plain_producer(kafka_broker)
    producer.produce(unique_topic, key=asset.encode(),
                     value=command_value("move_axis",
                                         envelope(cmd_cid, sender, {"x": "3", "y": "4.25", "speed": "120"})))
    assert producer.flush(10) == 0
    reader = TopicReader(kafka_broker, unique_topic, 3)
    try:
        reader.read_until(result_for(cmd_cid, asset), 15, f"the _RESULT of command {cmd_cid}")
        runtime.stop(5.0)
        reader.read_until(
            lambda seen: any(s.doc().get("ID") == "avail" and s.doc().get("VALUE") == "UNAVAILABLE"
                             for s in of_key(seen, asset)), 10, "avail=UNAVAILABLE after stop")
    finally:
        reader.close()
    t1 = now_ts()

    mine = of_key(reader.seen, asset)
    assert {s.partition for s in reader.seen} == {partition_for_key(asset.encode(), 3)}
    last: dict[str, dict[str, Any]] = {}
    for s in mine:
        assert s.key == asset.encode()
        assert s.partition == partition_for_key(asset.encode(), 3)  # Java murmur2, as ksqlDB would place it
        doc = s.doc()
        assert set(doc) == RECORD_FIELDS, doc
        assert set(doc["attributes"]) == {"timestamp"}, doc
        assert TIMESTAMP.match(doc["attributes"]["timestamp"]), doc
        assert t0 <= doc["attributes"]["timestamp"] <= t1, doc  # stamped during the test, UTC
        assert doc["TYPE"] in RECORD_TYPES, doc
        assert isinstance(doc["ID"], str) and isinstance(doc["TAG"], str)
        assert doc["VALUE"] is None or isinstance(doc["VALUE"], (str, int, float, bool)), doc
        if not doc["ID"].endswith(("_CMD", "_RESULT")):
            last[doc["ID"]] = doc

    def fields(attr: str) -> tuple[Any, str, str]:
        return last[attr]["VALUE"], last[attr]["TAG"], last[attr]["TYPE"]

    meta = metadata.metadata("flask-openfactory")
    assert fields("avail") == ("UNAVAILABLE", "Availability", "Events")  # the last one, after stop
    assert any(s.doc()["ID"] == "avail" and s.doc()["VALUE"] == "AVAILABLE" for s in mine)
    assert fields("application_version") == ("latest", "Application.Version", "Events")
    assert fields("application_manufacturer") == ("OpenFactoryIO", "Application.Manufacturer", "Events")
    assert fields("application_license") == ("Polyform Noncommercial License 1.0.0", "Application.License", "Events")
    assert fields("openfactory_version") == (meta["Version"], "Library.Version", "Events")
    assert fields("openfactory_manufacturer") == (meta.get("Author") or "unknown", "Library.Manufacturer", "Events")
    assert fields("openfactory_license") == (meta.get("License") or "unknown", "Library.License", "Events")
    assert fields("AssetType") == ("OpenFactoryApp", "AssetType", "OpenFactory")
    assert fields("status") == ("READY", "Execution", "Events")
    assert fields("position_x") == (3.0, "Position.X", "Samples")  # a number, not text
    assert fields("position_y") == (4.25, "Position.Y", "Samples")
    x_values = [s.doc()["VALUE"] for s in mine if s.doc()["ID"] == "position_x"]
    assert x_values[-3:] == [12.5, 1.5, 3.0]

    # Method advertisements: VALUE is a JSON string holding the description.
    for name in ("move_axis", "home", "mark"):
        assert last[name]["TYPE"] == "Method" and last[name]["TAG"] == "Method"
        assert isinstance(last[name]["VALUE"], str)
    move = json.loads(last["move_axis"]["VALUE"])
    assert move == {
        "description": "Move both axes to an absolute position.",
        "arguments": [
            {"name": "x", "description": "target X position in mm", "type": "float", "required": True,
             "default": None},
            {"name": "y", "description": "target Y position in mm", "type": "float", "required": True,
             "default": None},
            {"name": "speed", "description": "feed rate in mm/min", "type": "int", "required": False,
             "default": 100},
        ],
    }
    assert json.loads(last["home"]["VALUE"]) == {"description": "Return both axes to the origin.", "arguments": []}

    # Results: one per correlation id, a JSON string of exactly the result fields.
    answers = results(reader.seen, asset)
    assert Counter(r["correlation_id"] for r in answers) == {http_cid: 1, cmd_cid: 1}
    result_records = [s.doc() for s in mine if s.doc()["ID"].endswith("_RESULT")]
    for doc in result_records:
        assert (doc["ID"], doc["TAG"], doc["TYPE"]) == ("move_axis_RESULT", "Method.Result", "OpenFactory")
        assert isinstance(doc["VALUE"], str) and set(json.loads(doc["VALUE"])) == RESULT_FIELDS
    by_cid = {r["correlation_id"]: r for r in answers}
    http_answer, cmd_answer = by_cid[http_cid], by_cid[cmd_cid]
    assert (http_answer["sender_uuid"], http_answer["status"], http_answer["error"]) == ("HTTP-CALLER", "OK", None)
    assert http_answer["result"] == {"x": 1.5, "y": -2.0, "speed": 250}
    assert (cmd_answer["sender_uuid"], cmd_answer["status"], cmd_answer["error"]) == (sender, "OK", None)
    assert cmd_answer["result"] == {"x": 3.0, "y": 4.25, "speed": 120}
    for answer in answers:
        assert isinstance(answer["duration_ms"], (int, float)) and answer["duration_ms"] >= 0


# -- 2. foreign partitions -------------------------------------------------------------


def _neighbour_keys(partition: int, partitions: int, count: int = 10) -> list[str]:
    """``count`` asset keys, at least three in ``partition`` and three elsewhere."""
    rng = random.Random(partition)
    for _ in range(10_000):
        keys = [f"NEIGHBOUR-{rng.getrandbits(40):010x}" for _ in range(count)]
        inside = sum(partition_for_key(k.encode(), partitions) == partition for k in keys)
        if 3 <= inside <= count - 3:
            return keys
    raise AssertionError("no key set found")  # pragma: no cover


@pytest.mark.parametrize("election", ["lock", "group"])
def test_the_command_reader_fetches_only_its_own_partition(
        make_app: Callable[..., AppUnderTest], kafka_broker: TansuBroker, unique_topic: str, election: str) -> None:
    """Ten neighbour assets flood the topic while commands run: the reader fetches our
    partition only, and the neighbours that share it are skipped and counted as foreign."""
    under_test = make_app(unique_topic, 4, election=election)
    runtime, asset, ours = under_test.runtime, under_test.uuid, under_test.partition
    runtime.start()
    wait_owner(runtime)
    keys = _neighbour_keys(ours, 4)
    produced: Counter[int] = Counter()  # neighbour records per partition
    failures: list[str] = []
    total = 60_000

    def flood() -> None:
        producer = plain_producer(kafka_broker, **{"linger.ms": 5})
        value = record_value("noise", 1.0, tag="Noise", type="Samples")
        try:
            for i in range(total):  # full speed, bounded
                key = keys[i % len(keys)]
                while True:
                    try:
                        producer.produce(unique_topic, key=key.encode(), value=value)
                        break
                    except BufferError:
                        producer.poll(0.01)
                produced[partition_for_key(key.encode(), 4)] += 1
            if producer.flush(30) != 0:
                failures.append("neighbour records not delivered")
        except Exception as exc:  # reported by the test thread
            failures.append(repr(exc))

    noise = threading.Thread(target=flood, name="neighbours")
    noise.start()
    sender = plain_producer(kafka_broker)
    cids = []
    try:
        for n in range(20):  # commands interleaved with the flood
            cids.append(str(uuid.uuid4()))
            sender.produce(unique_topic, key=asset.encode(),
                           value=command_value("mark", envelope(cids[-1], "CALLER", {"n": str(n)})))
            sender.poll(0)
        assert sender.flush(10) == 0
        wait_for(lambda: len(under_test.probe.calls) >= 20, 60, "20 commands executed during the flood")
    finally:
        noise.join(60)
    assert not noise.is_alive() and failures == []
    assert sorted(under_test.probe.calls) == list(range(20))
    in_ours = produced[ours]
    assert 0 < in_ours < total
    # Every neighbour record sharing our partition was read, skipped and counted.
    wait_for(lambda: runtime.counters["records_foreign"] >= in_ours, 60, "all shared-partition records handled")
    watermarks = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": f"wm-{uuid.uuid4().hex}"})
    try:  # the reader went through every offset of its partition, fetched or taken from the follower
        def read_to_the_end() -> bool:
            end = watermarks.get_watermark_offsets(TopicPartition(unique_topic, ours), timeout=5.0)[1]
            return bool(command_reader(runtime).reader_stats["position"] >= end)

        wait_for(read_to_the_end, 30, "the command reader at its partition's end")
    finally:
        watermarks.close()
    reader = command_reader(runtime)
    received = reader.reader_stats["received"]
    assert set(received) == {ours}, received  # nothing fetched from the other 3 partitions
    assert runtime.counters["records_foreign"] == in_ours
    if election == "group":  # a lock-elected reader takes what it has not fetched from the follower
        assert received[ours] >= in_ours + 20
    assert runtime.counters["commands_ok"] == 20 and runtime.counters["records_malformed"] == 0
    if election == "group":
        assert reader.reader == KafkaGroupReader.__name__
        # The group gave this only member every partition; it assigned itself ours alone.
        assignments = reader.reader_stats["assignments"]
        assert assignments and ours in assignments[-1]
        assert sorted({p for given in assignments for p in given}) == [0, 1, 2, 3]
    ready, checks = runtime.readiness()
    assert ready, checks


def test_commands_run_while_a_neighbour_asset_writes_to_the_partition_all_the_time(
        make_app: Callable[..., AppUnderTest], kafka_broker: TansuBroker, unique_topic: str) -> None:
    """A neighbour in our partition never lets a fetch come back empty: start, recovery and
    execution must not wait for it to go quiet (they did: start hung, commands were skipped)."""
    under_test = make_app(unique_topic, 1)
    stop = threading.Event()
    written: list[int] = []

    def neighbour() -> None:
        producer = plain_producer(kafka_broker)
        value = record_value("temperature", 21.5, tag="Temperature", type="Samples")
        while not stop.is_set() and len(written) < 20_000:  # bounded: 100 records/s at most
            producer.produce(unique_topic, key=b"NEIGHBOUR-SENSOR", value=value)
            producer.poll(0)
            written.append(1)
            stop.wait(0.01)
        producer.flush(10)

    thread = threading.Thread(target=neighbour, name="neighbour")
    thread.start()
    try:
        wait_for(lambda: len(written) >= 20, 10, "the neighbour writing")
        started = time.monotonic()
        under_test.runtime.start()
        start_seconds = time.monotonic() - started
        cid = str(uuid.uuid4())
        producer = plain_producer(kafka_broker)
        producer.produce(unique_topic, key=under_test.uuid.encode(),
                         value=command_value("mark", envelope(cid, "CALLER", {"n": "7"})))
        assert producer.flush(10) == 0
        wait_for(lambda: under_test.probe.calls == [7], 10, "the command executed while the neighbour writes")
        assert thread.is_alive()  # it really ran under continuous traffic
        assert start_seconds < 5.0, start_seconds
    finally:
        stop.set()
        thread.join(15)


# -- 3. malformed records ----------------------------------------------------------------


def _malformed(kind: str, rng: random.Random, asset: str, other: str) -> tuple[bytes | None, bytes | None, str | None]:
    """One bad record of ``kind``: (key, value, correlation id it can be answered with)."""
    key = asset.encode()
    cid = str(uuid.uuid4())
    if kind == "not_json":
        return key, rng.choice([bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40))),
                                b"{not json", b"\xff\xfe\x00", b"NaN-ish text", b""]), None
    if kind == "null_value":
        return key, None, None
    if kind == "other_shape":
        return key, json.dumps(rng.choice([
            [1, 2, 3], "a string", 42, None, True, {}, {"ID": "x"}, {"TYPE": "Events"},
            {"ID": "x", "TYPE": "Bogus", "VALUE": 1}, {"ID": 5, "TYPE": "Events", "VALUE": 1},
            {"ID": "mark_CMD", "TYPE": "OpenFactory", "VALUE": {"nested": "object"}},
            {"ID": "mark_CMD", "TYPE": "OpenFactory", "TAG": 7, "VALUE": "x"},
        ])).encode(), None
    if kind == "no_key":
        return None, command_value("mark", envelope(cid, "CALLER", {"n": "1"})), None
    if kind == "unknown_method":
        return key, command_value(rng.choice(["explode", "Mark", "mark2"]), envelope(cid, "CALLER", {})), cid
    if kind == "bad_uuid":
        return key, command_value("mark", envelope(rng.choice(["not-a-uuid", "", 12, None, "1234"]), "CALLER",
                                                   {"n": "1"})), None
    if kind == "envelope_not_json":
        return key, command_value("mark", rng.choice(["{oops", "[]", "42", "null"])), None
    if kind == "unknown_field":
        bad = envelope(cid, "CALLER", {"n": "1"})
        if rng.random() < 0.5:
            bad["extra"] = 1
        else:
            bad["header"]["priority"] = "high"
        return key, command_value("mark", bad), cid
    if kind == "non_string_arg":
        return key, command_value("mark", envelope(cid, "CALLER", {"n": rng.choice([1, 2.5, None, [1], True])})), cid
    if kind == "missing_sender":
        bad = envelope(cid, "CALLER", {"n": "1"})
        if rng.random() < 0.5:
            del bad["header"]["sender_uuid"]
        else:
            bad["header"]["sender_uuid"] = rng.choice(["", "   ", 5])
        return key, command_value("mark", bad), cid
    if kind == "bad_arguments":
        return key, command_value("mark", envelope(cid, "CALLER", rng.choice([{"n": "2.5"}, {}, {"n": "x"},
                                                                               {"n": "1", "z": "2"}]))), cid
    if kind == "other_asset":
        return other.encode(), command_value("mark", envelope(cid, "CALLER", {"n": "1"})), None
    raise AssertionError(kind)


# kind -> every counter one such record must bump (each bad record lands in exactly one of
# records_malformed, records_foreign, commands_unanswerable, commands_rejected)
MALFORMED_KINDS: dict[str, tuple[str, ...]] = {
    "not_json": ("records_malformed",),
    "null_value": ("records_malformed",),
    "other_shape": ("records_malformed",),
    "no_key": ("records_malformed",),
    "other_asset": ("records_foreign",),
    "unknown_method": ("commands_received", "rejected_unknown_method", "commands_rejected"),
    "bad_uuid": ("commands_received", "rejected_invalid_envelope", "commands_unanswerable"),
    "envelope_not_json": ("commands_received", "rejected_invalid_envelope", "commands_unanswerable"),
    "unknown_field": ("commands_received", "rejected_invalid_envelope", "commands_rejected"),
    "non_string_arg": ("commands_received", "rejected_invalid_envelope", "commands_rejected"),
    "missing_sender": ("commands_received", "rejected_invalid_envelope", "commands_rejected"),
    "bad_arguments": ("commands_received", "rejected_bad_arguments", "commands_rejected"),
}
OUTCOMES = ("records_malformed", "records_foreign", "commands_unanswerable", "commands_rejected")


def test_malformed_records_are_counted_and_every_valid_command_runs_once(
        make_app: Callable[..., AppUnderTest], kafka_broker: TansuBroker, unique_topic: str) -> None:
    """1,000 bad records interleaved with 100 commands: the dispatcher survives, counts
    each bad record once by kind, answers what it can, and runs each command once."""
    under_test = make_app(unique_topic, 3)
    runtime, asset, ours = under_test.runtime, under_test.uuid, under_test.partition
    runtime.start()
    wait_owner(runtime)
    rng = random.Random(20260504)
    other = next(k for k in (f"OTHER-{i}" for i in range(10_000)) if partition_for_key(k.encode(), 3) == ours)
    kinds = sorted(MALFORMED_KINDS)
    plan: list[tuple[str, bytes | None, bytes | None, str | None]] = []
    for i in range(1000):
        kind = kinds[i % len(kinds)] if i < len(kinds) else rng.choice(kinds)
        plan.append((kind, *_malformed(kind, rng, asset, other)))
    valid = {str(uuid.uuid4()): n for n in range(100)}
    plan += [("valid", asset.encode(), command_value("mark", envelope(cid, "CALLER", {"n": str(n)})), cid)
             for cid, n in valid.items()]
    rng.shuffle(plan)
    before = Counter(runtime.counters)
    producer = plain_producer(kafka_broker, **{"linger.ms": 5})
    for _, key, value, _ in plan:
        producer.produce(unique_topic, key=key, value=value, partition=ours)  # all in the app's partition
    assert producer.flush(10) == 0
    sent = Counter(kind for kind, *_ in plan)
    assert sent["valid"] == 100 and sum(sent.values()) == 1100

    reader = TopicReader(kafka_broker, unique_topic, 3)
    try:
        answered = {cid for kind, _, _, cid in plan if cid is not None}
        seen = reader.read_until(
            lambda seen: answered <= {r["correlation_id"] for r in results(seen, asset)}, 60,
            "a _RESULT for every answerable command")
    finally:
        reader.close()
    assert sorted(under_test.probe.calls) == list(range(100))  # each ran exactly once
    answers = results(seen, asset)
    assert Counter(r["correlation_id"] for r in answers) == Counter(answered)  # one answer each
    statuses = {r["correlation_id"]: r["status"] for r in answers}
    assert all(statuses[cid] == "OK" for cid in valid)
    assert {r["result"] for r in answers if r["correlation_id"] in valid} == set(range(100))
    rejected = {cid for kind, _, _, cid in plan if cid is not None and kind != "valid"}
    assert {cid for cid, status in statuses.items() if status == "REJECTED"} == rejected

    expected: Counter[str] = Counter({"commands_received": 100, "commands_ok": 100})
    for kind, counters in MALFORMED_KINDS.items():
        for counter in counters:
            expected[counter] += sent[kind]

    def counted() -> Counter[str]:
        return Counter({k: runtime.counters[k] - before[k] for k in runtime.counters})

    # Records after the last answered command may still be in hand: wait for the counts.
    wait_for(lambda: all(counted()[c] >= n for c, n in expected.items()), 10, "every bad record counted")
    delta = counted()
    assert {c: delta[c] for c in expected} == dict(expected), sent
    assert sum(delta[c] for c in OUTCOMES) == 1000  # each bad record counted once, by kind
    assert delta["commands_rejected"] == len(rejected)
    assert delta["commands_duplicate"] == delta["commands_error"] == delta["dispatch_errors"] == 0
    ready, checks = runtime.readiness()
    dispatcher = runtime.dispatcher_state()
    assert ready and dispatcher is not None and dispatcher.alive, checks


# -- 4. broker frozen --------------------------------------------------------------------


def test_frozen_broker_http_answers_ready_flips_and_no_value_is_lost(
        make_app: Callable[..., AppUnderTest], kafka_broker: TansuBroker, unique_topic: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_OPENFACTORY_CALL_WAIT", "0.5")  # a call's bounded wait for its result
    under_test = make_app(unique_topic, 3)
    app, runtime, asset = under_test.app, under_test.runtime, under_test.uuid
    runtime.start()
    client = app.test_client()
    wait_for(lambda: client.get("/ofa/ready").status_code == 200, 10, "ready before the freeze")
    during: list[float] = []
    slowest = 0.0
    first_503: float | None = None
    written: list[str] = []
    kafka_broker.freeze()
    frozen_at = time.monotonic()
    try:
        tick = threading.Event()
        i = 0
        while time.monotonic() - frozen_at < 10.0:
            i += 1
            value = 1000.0 + i
            with app.app_context():
                demo_machine.position_y.set(value)
            during.append(value)
            calls = [("GET", "/"), ("GET", "/ofa/health")]
            if i % 10 == 0:
                calls.append(("POST", "/ofa/methods/home"))
            for method, path in calls:
                started = time.monotonic()
                response = client.open(path, method=method)
                elapsed = time.monotonic() - started
                slowest = max(slowest, elapsed)
                if method == "POST":
                    # A call goes through the log: written before the outage was known, it waits
                    # its bounded time and answers 504 (it runs after the thaw); once the log is
                    # known unreachable it is refused (503) and never written. Never a false 200.
                    assert response.status_code in (200, 503, 504), (path, response.get_data(as_text=True))
                    if response.status_code != 503:
                        written.append(response.headers["X-Correlation-ID"])
                else:
                    assert response.status_code == 200, (path, response.get_data(as_text=True))
                assert elapsed < 1.0, (path, elapsed)
            if first_503 is None and client.get("/ofa/ready").status_code == 503:
                first_503 = time.monotonic() - frozen_at
            tick.wait(0.05)  # pace the writes over the outage
        frozen_for = time.monotonic() - frozen_at
    finally:
        kafka_broker.thaw()
    thawed_at = time.monotonic()
    assert first_503 is not None, "/ofa/ready never answered 503 during a 10 s outage"
    ready_body = None

    def ready_again() -> bool:
        nonlocal ready_body
        response = client.get("/ofa/ready")
        ready_body = response.get_json()
        return response.status_code == 200

    wait_for(ready_again, 30, "/ofa/ready back to 200 after the thaw")
    recovered = time.monotonic() - thawed_at
    assert runtime.transport.flush(30) == 0
    reader = TopicReader(kafka_broker, unique_topic, 3)
    try:
        # The calls written during the outage run after the thaw: their results may come
        # after the last value in the log, so read until both are there.
        seen = reader.read_until(
            lambda seen: set(during) <= {s.doc()["VALUE"] for s in of_key(seen, asset)
                                         if s.value and s.doc().get("ID") == "position_y"}
            and set(written) <= {r["correlation_id"] for r in results(seen, asset) if r["ID"] == "home_RESULT"},
            30, "every value set during the outage and the result of every call written")
    finally:
        reader.close()
    assert runtime.counters["delivery_failures"] == 0
    homes = [r for r in results(seen, asset) if r["ID"] == "home_RESULT"]
    assert sorted(r["correlation_id"] for r in homes) == sorted(written)  # each written call ran, once
    assert all(r["status"] == "OK" for r in homes)
    print(f"\nfreeze {frozen_for:.1f}s: {len(during)} values, slowest request {slowest * 1000:.1f} ms, "
          f"/ofa/ready 503 after {first_503:.2f}s, 200 again {recovered:.2f}s after thaw")


# -- 5. the CLI ------------------------------------------------------------------------


def _flask(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_") and k not in _PLATFORM_VARS}
    started = time.monotonic()
    completed = subprocess.run([str(Path(sys.executable).parent / "flask"), "--app", "wsgi", *args],  # this venv's
                               cwd=ROOT, env={**base, "FLASK_CONFIG": "production", **env},
                               capture_output=True, text=True, timeout=timeout)
    return completed, time.monotonic() - started


def test_cli_status_shows_the_live_asset_and_the_ksqldb_view(
        make_app: Callable[..., AppUnderTest], kafka_broker: TansuBroker, unique_topic: str, tmp_path: Path) -> None:
    under_test = make_app(unique_topic, 3)
    runtime, asset = under_test.runtime, under_test.uuid
    runtime.start()
    with under_test.app.app_context():
        demo_machine.position_x.set(42.25)
        demo_machine.status.set("CLI-CHECK")
    runtime.stop(5.0)
    reader = TopicReader(kafka_broker, unique_topic, 3)
    try:
        seen = reader.read_until(lambda seen: any(s.value and b"CLI-CHECK" in s.value for s in seen)
                                 and any(s.value and b"UNAVAILABLE" in s.value for s in seen), 10, "the app's records")
    finally:
        reader.close()

    # Without ksqlDB: the attributes are read back from the asset's partition.
    env = production_env(kafka_broker.bootstrap, asset, tmp_path / "cli-locks", topic=unique_topic)
    completed, seconds = _flask(["ofa", "status", "--json", "--timeout", "5"], env)
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    local = {a["id"]: a for a in report["attributes"]}
    assert local["position_x"]["value"] == 42.25 and local["status"]["value"] == "CLI-CHECK"
    assert local["AssetType"]["value"] == "OpenFactoryApp" and local["avail"]["value"] == "UNAVAILABLE"
    assert report["transport"]["ok"] and unique_topic in report["transport"]["detail"]
    assert report["ksqldb"] == {"configured": False}

    # With the platform's ksqlDB (the stand-in): it names the topic and holds the tables.
    with running_standin(unique_topic) as standin:
        standin.materialize((s.key, s.value) for s in seen)
        env = production_env(kafka_broker.bootstrap, asset, tmp_path / "cli-locks", ksqldb_url=standin.url)
        completed, seconds = _flask(["ofa", "status", "--timeout", "5"], env)
        assert completed.returncode == 0, completed.stderr
        out = completed.stdout
        attributes_part, _, ksqldb_part = out.partition(f"ksqlDB at {standin.url}")
        assert f"asset:     {asset}" in out
        assert f"transport: kafka://{kafka_broker.bootstrap} (ok: " in out and repr(unique_topic) in out
        assert re.search(r"^  position_x\s+42\.25\s+Position\.X\s+Samples", attributes_part, re.M), out
        assert re.search(r"^  status\s+CLI-CHECK\s+Execution\s+Events", attributes_part, re.M), out
        count = sum(row["TYPE"] != "Method" for row in standin.assets[asset].values())
        assert ksqldb_part.startswith(f": asset type OpenFactoryApp, {count} attribute(s)"), out
        assert re.search(r"^  position_x\s+42\.25\s+Position\.X\s+Samples", ksqldb_part, re.M), out
        assert re.search(r"^methods \(2\):\n(  .*\n)*  move_axis\(", out, re.M), out
        statements = standin.statements("/query")
        assert f"SELECT TYPE FROM assets_type WHERE ASSET_UUID='{asset}';" in statements
        assert any(f"asset_uuid='{asset}'" in s and "TYPE != 'Method'" in s for s in statements)
        assert standin.statements("/ksql") and all(s == "DESCRIBE ASSETS_STREAM EXTENDED;"
                                                   for s in standin.statements("/ksql"))
    print(f"\nflask ofa status (live broker + ksqlDB stand-in): {seconds:.2f}s")


def test_cli_status_against_a_dead_broker_fails_fast_naming_it(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"  # closed once the block ends: nothing listens
    env = production_env(dead, "OFA-IT-DEAD", tmp_path / "locks")
    completed, seconds = _flask(["ofa", "status", "--timeout", "2"], env, timeout=60)
    assert completed.returncode == 1, (completed.stdout, completed.stderr)
    assert f"Error: transport kafka://{dead} does not answer" in completed.stderr
    assert "Traceback" not in completed.stderr + completed.stdout
    print(f"\nflask ofa status against a dead broker: exit {completed.returncode} after {seconds:.2f}s")


# -- 6. topics are the platform's ----------------------------------------------------------


def test_start_on_a_missing_topic_fails_clearly_and_creates_nothing(
        make_app: Callable[..., AppUnderTest], kafka_broker: TansuBroker, unique_topic: str) -> None:
    under_test = make_app(unique_topic, 3, create=False)
    runtime = under_test.runtime
    with pytest.raises(TransportError) as info:
        runtime.start()
    message = str(info.value)
    assert repr(unique_topic) in message and kafka_broker.bootstrap in message
    assert runtime.start_error is not None and unique_topic in runtime.start_error
    ready, checks = runtime.readiness()
    assert not ready and unique_topic in checks["runtime"]["detail"]
    response = under_test.app.test_client().get("/ofa/ready")
    assert response.status_code == 503 and unique_topic in json.dumps(response.get_json())
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    assert unique_topic not in admin.list_topics(timeout=10).topics


def test_publishing_to_a_missing_topic_fails_delivery_and_creates_nothing(
        kafka_broker: TansuBroker, unique_topic: str) -> None:
    from flask_openfactory.transports import TransportOptions, create_transport
    from flask_openfactory.wire.protocol import Record

    transport = create_transport(
        "kafka://" + kafka_broker.bootstrap,
        TransportOptions(topic=unique_topic, kafka_config={"producer.topic.metadata.propagation.max.ms": 500,
                                                            "producer.message.timeout.ms": 5000}))
    outcome: list[Exception | None] = []
    try:
        transport.publish(Record.create("OFA-IT-X", "avail", "AVAILABLE", tag="Availability", type="Events"),
                          on_delivery=outcome.append)
        assert transport.flush(15) == 0
    finally:
        transport.close(2.0)
    assert len(outcome) == 1 and isinstance(outcome[0], Exception)
    assert "nknown topic" in str(outcome[0]), outcome
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    assert unique_topic not in admin.list_topics(timeout=10).topics


def test_delivery_failures_are_counted_and_shown_by_readiness(kafka_broker, unique_topic) -> None:
    """Records the broker cannot take fail in the end: counted, and /ofa/ready's detail says so."""
    from flask_openfactory.runtime import AssetRuntime, RuntimeSettings
    from flask_openfactory.transports import TransportOptions

    kafka_broker.create_topic(unique_topic, 1)
    options = TransportOptions(topic=unique_topic, kafka_config={"producer.message.timeout.ms": 300,
                                                                 "producer.enable.idempotence": False})
    runtime = AssetRuntime(RuntimeSettings(asset_uuid="FAILS", transport_url="kafka://" + kafka_broker.bootstrap,
                                           transport_options=options, execute_commands=False))
    runtime.start()
    try:
        kafka_broker.freeze()
        try:
            for _ in range(5):
                runtime.set("avail", "AVAILABLE")
            wait_for(lambda: runtime.counters["delivery_failures"] >= 5, 10.0, "delivery failures counted")
        finally:
            kafka_broker.thaw()
        _, checks = runtime.readiness()
        assert "failed delivery in this process" in checks["transport"]["detail"]
        assert runtime.transport.stats()["delivery_failures"] >= 5
    finally:
        runtime.stop(5.0, publish_unavailable=False)


def test_a_read_after_the_stop_reopens_connections_that_the_next_stop_closes(
        make_app: Callable[..., AppUnderTest], kafka_broker: TansuBroker, unique_topic: str) -> None:
    # After a stop the runtime still answers reads and sends calls as a client (tests, scripts
    # and the CLI rely on it); what that reopens belongs to the runtime, so a stop closes it too.
    under_test = make_app(unique_topic, 1)
    runtime = under_test.runtime
    port = int(kafka_broker.bootstrap.rsplit(":", 1)[1])
    others = connections_to(os.getpid(), port)  # the broker fixture's admin client, earlier tests' clients
    runtime.start()
    runtime.set("position_x", 21.5)
    runtime.stop(5.0)
    wait_for(lambda: connections_to(os.getpid(), port) <= others, 10.0, "the stopped runtime's connections closed")
    others = connections_to(os.getpid(), port)
    with pytest.raises(RuntimeStopped, match="nothing was published"):
        runtime.set("position_x", 22.0)
    assert {r.id: r.value for r in runtime.records()}["position_x"] == 21.5  # read from the log itself
    runtime.send_command(under_test.uuid, "home", {}, sender_uuid="OFA-IT-CALLER")  # a producer again
    wait_for(lambda: connections_to(os.getpid(), port) > others, 10.0, "the reopened producer connected")
    runtime.stop(5.0)
    wait_for(lambda: connections_to(os.getpid(), port) <= others, 10.0, "the reopened connections closed")
