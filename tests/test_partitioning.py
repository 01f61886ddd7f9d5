"""Java-compatible murmur2 partitioning: published vectors, then a real broker.

The vectors pin the hash to Java's; the broker test proves that librdkafka's
``murmur2_random`` partitioner (what our producer uses) picks the same
partition we compute, for the key shapes an asset UUID can take.
"""

from __future__ import annotations

import random
import string
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from flask_openfactory.transports.partitioning import murmur2, partition_for_key
from harness.broker import TansuBroker

# Apache Kafka, clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java (testMurmur2).
JAVA_UTILS_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}

# librdkafka, src/rdmurmur2.c (unittest_murmur2, java_murmur2_results), as
# unsigned 32-bit values. Together the keys cover every tail length 0..3.
LIBRDKAFKA_VECTORS = {
    b"kafka": 0xD067CF64,
    b"giberish123456789": 0x8F552B0C,
    b"1234": 0x9FC97B14,
    b"234": 0xE7C009CA,
    b"34": 0x873930DA,
    b"4": 0x5A4B5CA1,
    b"PreAmbleWillBeRemoved,ThePrePartThatIs": 0x78424F1C,
    b"reAmbleWillBeRemoved,ThePrePartThatIs": 0x4A62B377,
    b"eAmbleWillBeRemoved,ThePrePartThatIs": 0xE0E4E09E,
    b"AmbleWillBeRemoved,ThePrePartThatIs": 0x62B8B43F,
    b"": 0x106E08D9,
}

FAST_CONSUMER = {
    "session.timeout.ms": 2000,
    "heartbeat.interval.ms": 500,
    "fetch.wait.max.ms": 10,
    "fetch.min.bytes": 1,
}


# -- pure unit tests ------------------------------------------------------------


@pytest.mark.parametrize(("key", "expected"), JAVA_UTILS_VECTORS.items())
def test_murmur2_java_utils_vectors(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


@pytest.mark.parametrize(("key", "expected"), LIBRDKAFKA_VECTORS.items())
def test_murmur2_librdkafka_vectors(key: bytes, expected: int) -> None:
    assert murmur2(key) & 0xFFFFFFFF == expected


def test_murmur2_is_signed_32_bit() -> None:
    values = [murmur2(bytes([i]) * n) for i in range(256) for n in range(6)]
    assert all(-(2**31) <= v < 2**31 for v in values)
    assert any(v < 0 for v in values) and any(v > 0 for v in values)


def test_murmur2_accepts_bytes_like() -> None:
    assert murmur2(bytearray(b"foobar")) == murmur2(memoryview(b"foobar")) == -790332482


def test_murmur2_rejects_str() -> None:
    with pytest.raises(TypeError):
        murmur2("foobar")  # type: ignore[arg-type]


def test_partition_clears_sign_bit_instead_of_abs() -> None:
    # murmur2(b"21") is negative: Java's toPositive gives 3 for 7 partitions, abs() would give 6.
    assert partition_for_key(b"21", 7) == (-973932308 & 0x7FFFFFFF) % 7 == 3
    assert partition_for_key(b"foobar", 12) == 6
    assert partition_for_key(b"anything", 1) == 0


@pytest.mark.parametrize("bad", [0, -1])
def test_partition_rejects_bad_counts(bad: int) -> None:
    with pytest.raises(ValueError):
        partition_for_key(b"k", bad)


def test_partition_rejects_non_int_count() -> None:
    with pytest.raises(TypeError):
        partition_for_key(b"k", 2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        partition_for_key(b"k", True)


# -- against the real broker ------------------------------------------------------


def _random_keys(rng: random.Random, count: int) -> list[bytes]:
    """Keys of every byte length 0..40 plus random ASCII, non-ASCII and binary ones."""
    keys = [bytes(rng.choices(string.ascii_letters.encode(), k=n)) for n in range(41)]
    non_ascii = "äöüßéçñ€漢字機械Ωλ🙂\u200b"
    while len(keys) < count:
        n = rng.randint(0, 40)
        kind = len(keys) % 3
        if kind == 0:
            keys.append("".join(rng.choices(string.printable, k=n)).encode())
        elif kind == 1:
            text = "".join(rng.choice(non_ascii + string.ascii_letters) for _ in range(n))
            keys.append(text.encode("utf-8"))
        else:
            keys.append(rng.randbytes(n))
    return keys


@pytest.mark.parametrize("partitions", [1, 2, 3, 4, 7, 12])
def test_librdkafka_murmur2_random_matches(
    kafka_broker: TansuBroker, unique_topic: str, partitions: int
) -> None:
    kafka_broker.create_topic(unique_topic, partitions)
    keys = _random_keys(random.Random(partitions), 200)
    producer = Producer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "message.timeout.ms": 15000,
        }
    )
    reports: list[tuple[bytes, int]] = []
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            reports.append((msg.key(), msg.partition()))

    for key in keys:
        producer.produce(unique_topic, key=key, value=b"v", on_delivery=on_delivery)
    assert producer.flush(20) == 0
    assert errors == []
    assert len(reports) == len(keys)
    mismatches = [
        (key, got, partition_for_key(key, partitions))
        for key, got in reports
        if got != partition_for_key(key, partitions)
    ]
    assert mismatches == []
    if partitions > 1:
        assert len({p for _, p in reports}) > 1  # the keys really were spread out


def test_freeze_holds_delivery_until_thaw(kafka_broker: TansuBroker, unique_topic: str) -> None:
    kafka_broker.create_topic(unique_topic, 1)
    producer = Producer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 0,
            "message.timeout.ms": 30000,
            # Tansu may leave a request that arrived while frozen unanswered
            # (see TansuBroker.freeze); a short request timeout makes the
            # producer resend it, and idempotence keeps that from duplicating.
            "request.timeout.ms": 2000,
            "enable.idempotence": True,
        }
    )
    delivered: list[tuple[bytes, KafkaError | None]] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        delivered.append((msg.value(), err))

    # Warm up so the connection and metadata exist before the freeze.
    producer.produce(unique_topic, key=b"k", value=b"before", on_delivery=on_delivery)
    assert producer.flush(10) == 0
    assert delivered == [(b"before", None)]

    kafka_broker.freeze()
    try:
        assert kafka_broker.process_state() in ("T", "")
        producer.produce(unique_topic, key=b"k", value=b"during", on_delivery=on_delivery)
        # Serve delivery reports for a while: none may arrive while the broker is stopped.
        deadline = time.monotonic() + 0.5
        while (left := deadline - time.monotonic()) > 0:
            producer.poll(left)
        assert delivered == [(b"before", None)]
    finally:
        kafka_broker.thaw()
    assert kafka_broker.process_state() != "T"

    assert producer.flush(15) == 0
    assert delivered == [(b"before", None), (b"during", None)]

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "group.id": unique_topic,
            "enable.auto.commit": False,
            **FAST_CONSUMER,
        }
    )
    try:
        # assign(), not subscribe(): no group join needed to read the partition back.
        consumer.assign([TopicPartition(unique_topic, 0, 0)])
        values: list[bytes] = []
        deadline = time.monotonic() + 10
        while len(values) < 2 and (left := deadline - time.monotonic()) > 0:
            msg = consumer.poll(min(0.5, left))
            if msg is not None and msg.error() is None:
                values.append(msg.value())
        assert values == [b"before", b"during"]
    finally:
        consumer.close()


# -- the test broker's own failure modes ------------------------------------------


def test_broker_missing_binary_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="missing or not executable"):
        TansuBroker(binary=tmp_path / "no-such-tansu").start()


def test_broker_that_exits_fails_loudly(tmp_path: Path) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'cannot bind' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match="exited with status 3.*cannot bind"):
        TansuBroker(binary=fake).start()


def test_broker_that_never_answers_fails_loudly(tmp_path: Path) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(0o755)
    broker = TansuBroker(binary=fake, startup_timeout=1.0)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="did not answer metadata"):
        broker.start()
    assert time.monotonic() - start < 8
    with pytest.raises(RuntimeError):
        _ = broker.pid  # stopped: the process it started is gone
