"""Attribute publishing: the public API against hand-written producers.

Each measurement runs in a fresh interpreter (``python -m bench.publish
SPEC``) holding one app, like a worker: measured in the bench's own process,
rates drifted with the apps and garbage earlier rounds left behind.

Every side writes the same records (same key, IDs, TAGs, TYPE, JSON shape and
a fresh timestamp each), and the clock runs until the last one is delivered
(a final flush is inside the timing):

* extension: ``attribute.set(v)`` inside an app context, runtime started;
* raw: ``json.dumps`` of the record + ``produce`` + ``poll(0)``, with the
  extension's producer settings (what a hand-written async producer does);
* flush per write: the reference's producer (``murmur2_random`` only) and
  ``flush()`` after every ``produce``;
* floor: the raw producer with the one reader this design runs in a process, even
  the one that holds the command log (its command reader is fed by the follower),
  hand-written: key and origin header of every record.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from flask_openfactory.transports.kafka.messages import ORIGIN_HEADER, fetch
from flask_openfactory.transports.partitioning import partition_for_key
from flask_openfactory.wire.protocol import SAMPLES, format_timestamp
from harness.kafka_settings import KAFKA_LOG, RAW_CONSUMER_CONFIG, RAW_PRODUCER_CONFIG
from harness.progress import log
from harness.scratch import scratch_dir, unique_name

from .apps import asset_app, attribute_ids
from .common import ROOT, Broker

WARMUP = 500


@dataclass(frozen=True)
class Rate:
    """Records per second (wall clock) and this process's CPU per record (all threads).

    CPU per record barely moves when other processes share the machine, so
    it says what costs the time when the wall-clock rates are noisy.
    """

    per_second: float
    cpu_us: float


@dataclass
class PublishResult:
    """Rates per round; figures are medians of the per-round (paired) ratios."""

    raw: list[Rate] = field(default_factory=list)
    floor: list[Rate] = field(default_factory=list)
    flush_per_write: list[Rate] = field(default_factory=list)
    ours: list[Rate] = field(default_factory=list)
    ours_idle_runtime: list[Rate] = field(default_factory=list)


def _wire(attr_id: str, tag: str, value: float) -> bytes:
    """The contract's record, built the way a hand-written producer would."""
    return json.dumps(
        {"ID": attr_id, "VALUE": value, "TAG": tag, "TYPE": SAMPLES,
         "attributes": {"timestamp": format_timestamp()}}
    ).encode("utf-8")


def _produce_loop(producer: Producer, topic: str, key: bytes, ids: list[tuple[str, str]], n: int,
                  flush_each: bool, headers: list[tuple[str, bytes]] | None = None) -> None:
    k = len(ids)
    for i in range(n):
        attr_id, tag = ids[i % k]
        value = _wire(attr_id, tag, float(i))
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers)
                break
            except BufferError:
                producer.poll(0.01)
        if flush_each:
            producer.flush()
        else:
            producer.poll(0)


def _timed(n: int, body: Callable[[], None]) -> Rate:
    gc.collect()  # the app's construction garbage is not the publisher's cost
    wall, cpu = time.perf_counter(), time.process_time()
    body()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Rate(n / wall, cpu / n * 1e6)


def raw_async_rate(bootstrap: str, topic: str, key: str, ids: list[tuple[str, str]], n: int) -> Rate:
    """Raw confluent-kafka, asynchronous, with the extension's producer settings."""
    producer = Producer({"bootstrap.servers": bootstrap, **RAW_PRODUCER_CONFIG})
    producer.list_topics(topic, timeout=10)
    _produce_loop(producer, topic, key.encode(), ids, WARMUP, False)
    producer.flush(30)
    left = 0

    def body() -> None:
        nonlocal left
        _produce_loop(producer, topic, key.encode(), ids, n, False)
        left = producer.flush(60)

    rate = _timed(n, body)
    if left:
        raise RuntimeError(f"raw producer: {left} records undelivered")
    return rate


class _Tail(threading.Thread):
    """A hand-written follower of the partition, doing per record what the design needs at least."""

    def __init__(self, bootstrap: str, tp: TopicPartition, key: bytes, origin: bytes) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}",
                                  **RAW_CONSUMER_CONFIG})
        self.consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_END)])
        self.key, self.ours = key, (ORIGIN_HEADER, origin)
        self.stop, self.seen = threading.Event(), False

    def run(self) -> None:
        key, ours = self.key, self.ours
        while not self.stop.is_set():
            for message in fetch(self.consumer, 0.1):
                if message.error() is not None:
                    continue
                message.offset()
                if message.key() != key:
                    continue
                self.seen = True
                headers = message.headers()
                if headers and headers[-1] == ours:  # written by this process
                    continue
        self.consumer.close()


def floor_rate(bootstrap: str, topic: str, key: str, ids: list[tuple[str, str]], n: int) -> Rate:
    """The raw producer (its records marked, as the extension's are) with a follower tailing its
    partition in the same process: the least this design costs a record here."""
    producer = Producer({"bootstrap.servers": bootstrap, **RAW_PRODUCER_CONFIG})
    partitions = len(producer.list_topics(topic, timeout=10).topics[topic].partitions)
    tp = TopicPartition(topic, partition_for_key(key.encode(), partitions))
    origin, encoded = uuid.uuid4().hex.encode(), key.encode()
    tail = _Tail(bootstrap, tp, encoded, origin)
    tail.start()
    headers = [(ORIGIN_HEADER, origin)]
    try:
        deadline = time.monotonic() + 30
        while not tail.seen:  # the follower has its partition
            if time.monotonic() > deadline:
                raise RuntimeError("floor: the follower saw nothing of the warm-up within 30 s")
            _produce_loop(producer, topic, encoded, ids, 50, False, headers)
            producer.flush(10)
            time.sleep(0.05)
        left = 0

        def body() -> None:
            nonlocal left
            _produce_loop(producer, topic, encoded, ids, n, False, headers)
            left = producer.flush(60)

        rate = _timed(n, body)
    finally:
        tail.stop.set()
        tail.join(10)
    if left:
        raise RuntimeError(f"floor producer: {left} records undelivered")
    return rate


def flush_per_write_rate(bootstrap: str, topic: str, key: str, ids: list[tuple[str, str]], n: int) -> Rate:
    """The reference's producer: murmur2_random only, ``flush()`` after every produce."""
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "logger": KAFKA_LOG})
    producer.list_topics(topic, timeout=10)
    _produce_loop(producer, topic, key.encode(), ids, 50, True)
    return _timed(n, lambda: _produce_loop(producer, topic, key.encode(), ids, n, True))


def ours_rate(app: Any, declared: list[Any], n: int, *, start: bool = True) -> Rate:
    """``attribute.set`` inside an app context, runtime started as in a serving worker.

    ``start=False`` leaves the follower and the command reader off (only the
    producer runs): a diagnostic that isolates what those threads cost.
    """
    runtime = app.extensions["openfactory"].runtime
    if start:
        runtime.start()
    try:
        with app.app_context():
            k = len(declared)
            for i in range(WARMUP):
                declared[i % k].set(float(i))
            runtime.transport.flush(30)
            before = dict(runtime.transport.stats())
            left = 0

            def body() -> None:
                nonlocal left
                for i in range(n):
                    declared[i % k].set(float(i))
                left = runtime.transport.flush(60)

            rate = _timed(n, body)
            stats = runtime.transport.stats()
        if left or stats["delivery_failures"] or stats["delivered"] - before["delivered"] < n:
            raise RuntimeError(f"extension: records undelivered or failed: {stats}")
        return rate
    finally:
        runtime.stop(10)


@dataclass(frozen=True)
class Spec:
    """One measurement, run by :func:`measure` in a fresh interpreter."""

    kind: str  # raw | floor | flush | ours
    bootstrap: str
    topic: str
    records: int
    attributes: int = 5
    methods: int = 2
    start: bool = True
    lock_dir: str = ""
    asset: str = "BENCH-PUBLISH"


def _run_spec(spec: Spec) -> Rate:
    ids = attribute_ids(spec.attributes)
    if spec.kind == "raw":
        return raw_async_rate(spec.bootstrap, spec.topic, spec.asset, ids, spec.records)
    if spec.kind == "flush":
        return flush_per_write_rate(spec.bootstrap, spec.topic, spec.asset, ids, spec.records)
    if spec.kind == "floor":
        return floor_rate(spec.bootstrap, spec.topic, spec.asset, ids, spec.records)
    app, declared = asset_app(bootstrap=spec.bootstrap, topic=spec.topic, asset_uuid=spec.asset,
                              lock_dir=spec.lock_dir, attributes=spec.attributes, methods=spec.methods)
    return ours_rate(app, declared, spec.records, start=spec.start)


def measure(spec: Spec) -> Rate:
    proc = subprocess.run([sys.executable, "-m", "bench.publish", json.dumps(asdict(spec))], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"publish measurement {spec.kind} failed: {proc.stderr[-3000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return Rate(float(data["per_second"]), float(data["cpu_us"]))


def run_publish(broker: Broker, *, records: int, flush_records: int, rounds: int) -> PublishResult:
    """Figures publish_ratio_vs_raw and publish_ratio_vs_flush_per_write.

    Many short rounds, each side next to the others and the order flipped
    every round: the machine may be shared, and a ratio of two rates taken
    seconds apart is far steadier than either rate. Every side writes to its
    own fresh topic because Tansu's fetch cost grows with the batches already
    in a partition (the app's own consumers read its partition).
    """
    broker.restart()
    result = PublishResult()
    for r in range(rounds):
        sides = [
            (result.raw, Spec("raw", broker.bootstrap, broker.create_topic(unique_name("bench-raw"), 8), records)),
            (result.floor, Spec("floor", broker.bootstrap, broker.create_topic(unique_name("bench-floor"), 8),
                                records)),
            (result.flush_per_write, Spec("flush", broker.bootstrap, broker.create_topic(unique_name("bench-flush"), 8),
                                          flush_records)),
            (result.ours, Spec("ours", broker.bootstrap, broker.create_topic(unique_name("bench-ours"), 8), records,
                               lock_dir=scratch_dir("locks-"))),
        ]
        for into, spec in sides if r % 2 == 0 else reversed(sides):
            into.append(measure(spec))
        log(f"publish round {r + 1}/{rounds}: extension {result.ours[-1].per_second:,.0f}/s, raw async "
            f"{result.raw[-1].per_second:,.0f}/s, floor {result.floor[-1].per_second:,.0f}/s, flush per write "
            f"{result.flush_per_write[-1].per_second:,.0f}/s")
    result.ours_idle_runtime.append(measure(Spec("ours", broker.bootstrap,
                                                 broker.create_topic(unique_name("bench-idle"), 8), records,
                                                 start=False, lock_dir=scratch_dir("locks-"))))
    log(f"publish diagnostic: extension, runtime not started {result.ours_idle_runtime[-1].per_second:,.0f}/s")
    return result


@dataclass
class ScalingResult:
    small: list[Rate] = field(default_factory=list)
    large: list[Rate] = field(default_factory=list)


def run_scaling(broker: Broker, *, records: int, rounds: int) -> ScalingResult:
    """Figure publish_scaling_1000_attrs: 1,000 attributes + 100 methods vs 5 + 2.

    Paired rounds as in :func:`run_publish`, order flipped every round, a
    fresh topic per app and round; the set() calls cycle over all declared
    attributes.
    """
    broker.restart()
    result = ScalingResult()
    for r in range(rounds):
        rates = {}
        order = ((5, 2), (1000, 100)) if r % 2 == 0 else ((1000, 100), (5, 2))
        for attributes, methods in order:
            topic = broker.create_topic(unique_name(f"bench-scaling-{attributes}"), 8)
            rates[attributes] = measure(Spec("ours", broker.bootstrap, topic, records, attributes=attributes,
                                             methods=methods, lock_dir=scratch_dir("locks-"),
                                             asset=f"BENCH-SCALE-{attributes}"))
        result.small.append(rates[5])
        result.large.append(rates[1000])
        log(f"scaling round {r + 1}/{rounds}: 5 attrs {result.small[-1].per_second:,.0f}/s, "
            f"1000 attrs {result.large[-1].per_second:,.0f}/s")
    return result


def main() -> None:
    """Child side of :func:`measure`: run one spec, print its rate as JSON."""
    spec = Spec(**json.loads(sys.argv[1]))
    rate = _run_spec(spec)
    print(json.dumps(asdict(rate)), flush=True)


if __name__ == "__main__":
    main()
