"""Command round trip: another asset's ``_CMD`` until the app's ``_RESULT`` is read.

The caller behaves like another asset: it writes the contract's command
record with the extension's producer settings and flushes (it waits for the
answer anyway), then reads the target's partition with the shared consumer
settings. The baseline is one raw produce -> consume hop with the same
clients on the same broker, interleaved with the commands sample by sample.
A command is two such hops plus the app's work, so a ratio near 2 is the floor.
What this broker allows is measured too, in blocks of their own, each on a fresh
broker (in the app's partition its records would slow the app's samples: Tansu's
fetch cost grows with the batches in a partition): a command answered by a raw echo (a consumer
that produces the answer as soon as it reads the command, with the extension's
producer settings: only the app's clients, none of its work), interleaved with its
own raw hops.

Interleaved with the same samples, on the same server: the HTTP method call
(``POST /ofa/methods/ping``, which goes through the log as a command and
answers with its ``_RESULT``), then the read that must follow it
(``GET /ofa/attributes/<id>``: the answering worker first applies the log up
to its end, the call's result included) and ``GET /ofa/health`` (no log at
all) as that read's baseline. Each request on a new connection, as gunicorn's
sync workers close every connection anyway.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Producer, TopicPartition

from flask_openfactory.transports.kafka.config import PRODUCER_DEFAULTS
from flask_openfactory.transports.kafka.messages import fetch
from flask_openfactory.transports.partitioning import partition_for_key
from flask_openfactory.wire.commands import command_record, new_envelope
from harness.kafka_settings import KAFKA_LOG, RAW_CONSUMER_CONFIG, RAW_PRODUCER_CONFIG
from harness.progress import log
from harness.scratch import scratch_dir, unique_name

from .common import Broker

WAIT = 10.0
CALLER = "BENCH-CALLER"


READ_ATTRIBUTE = "position_x"  # a declared attribute of the demo app


@dataclass
class RttResult:
    command_ms: list[float] = field(default_factory=list)
    raw_ms: list[float] = field(default_factory=list)
    echo_ms: list[float] = field(default_factory=list)  # a command answered by a raw echo
    echo_raw_ms: list[float] = field(default_factory=list)  # the raw hops interleaved with those
    timeouts: int = 0
    http_call_ms: list[float] = field(default_factory=list)  # POST /ofa/methods/<method>, through the log
    read_ms: list[float] = field(default_factory=list)  # GET /ofa/attributes/<id> right after the call
    health_ms: list[float] = field(default_factory=list)  # GET /ofa/health, same connection pattern
    http_failures: int = 0


def _http_ms(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, float]:
    """One request on a new connection: (status, milliseconds until the whole answer was read)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    return response.status, (time.perf_counter() - started) * 1000.0


def measure_http(port: int, method: str, into: RttResult, *, keep: bool) -> None:
    """The HTTP call through the log, then the read that follows it, then the health baseline."""
    status, call_ms = _http_ms(port, "POST", f"/ofa/methods/{method}", b"{}")
    read_status, read_ms = _http_ms(port, "GET", f"/ofa/attributes/{READ_ATTRIBUTE}")
    health_status, health_ms = _http_ms(port, "GET", "/ofa/health")
    if (status, read_status, health_status) != (200, 200, 200):
        into.http_failures += 1
        if into.http_failures >= 3:
            raise RuntimeError(f"HTTP call/read/health answered {status}/{read_status}/{health_status}")
        return
    if keep:
        into.http_call_ms.append(call_ms)
        into.read_ms.append(read_ms)
        into.health_ms.append(health_ms)


def _tail(bootstrap: str, topic: str, partition: int) -> Consumer:
    """A consumer at the current end of one partition (assign, no group join)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4()}", **RAW_CONSUMER_CONFIG})
    tp = TopicPartition(topic, partition)
    _, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
    consumer.assign([TopicPartition(topic, partition, max(high, 0))])
    return consumer


Match = Callable[[bytes | None, bytes | None], bool]


def _wait_for(consumer: Consumer, match: Match) -> bool:
    deadline = time.monotonic() + WAIT
    while (remaining := deadline - time.monotonic()) > 0:
        message = consumer.poll(min(remaining, 0.5))
        if message is None or message.error():
            continue
        if match(message.key(), message.value()):
            return True
    return False


def _is_result_of(target: bytes, method: str, cid: str) -> Match:
    def match(key: bytes | None, value: bytes | None) -> bool:
        if key != target or value is None:
            return False
        data = json.loads(value)
        if data.get("ID") != method + "_RESULT":
            return False
        return bool(json.loads(data["VALUE"]).get("correlation_id") == cid)

    return match


def _is_nonce(key: bytes, nonce: bytes) -> Match:
    def match(k: bytes | None, v: bytes | None) -> bool:
        return k == key and v == nonce

    return match


def _same_partition_key(target: bytes, partitions: int, prefix: str = "BENCH-RTT-RAW") -> bytes:
    wanted = partition_for_key(target, partitions)
    for i in range(10_000):
        key = f"{prefix}-{i}".encode("ascii")
        if partition_for_key(key, partitions) == wanted:
            return key
    raise RuntimeError("no key for the target's partition")


class _Echo(threading.Thread):
    """The best answer this broker allows: reads ``key``'s commands and produces each answer at once,
    with the extension's producer settings (``linger.ms`` included) and the shared consumer settings."""

    def __init__(self, bootstrap: str, topic: str, partition: int, key: bytes) -> None:
        super().__init__(name="bench-echo", daemon=True)
        self._topic, self._key = topic, key
        self._stopping = threading.Event()
        self._in = _tail(bootstrap, topic, partition)
        settings = {k: v for k, v in PRODUCER_DEFAULTS.items() if k != "allow.auto.create.topics"}
        self._out = Producer({"bootstrap.servers": bootstrap, **settings, "logger": KAFKA_LOG})

    def run(self) -> None:
        while not self._stopping.is_set():
            for message in fetch(self._in, 0.1):
                value = message.value()
                if message.error() is None and message.key() == self._key and value and value[:4] == b"cmd:":
                    self._out.produce(self._topic, key=self._key, value=b"res:" + value[4:])
            self._out.poll(0)  # delivery reports, as the extension's poller serves them

    def close(self) -> None:
        self._stopping.set()
        self.join(WAIT)
        self._in.close()
        self._out.flush(WAIT)


def measure_rtt(bootstrap: str, topic: str, target_uuid: str, method: str, partitions: int, samples: int,
                warmup: int, into: RttResult, port: int | None = None) -> None:
    """Alternate one raw hop, one command and (with ``port``) the HTTP call and reads, ``warmup`` + ``samples`` times.

    Three unanswered commands in a row mean the app is not executing
    commands at all: stop rather than wait out every remaining sample.
    """
    unanswered = 0
    producer = Producer({"bootstrap.servers": bootstrap, **RAW_PRODUCER_CONFIG})
    target = target_uuid.encode("utf-8")
    raw_key = _same_partition_key(target, partitions)
    partition = partition_for_key(target, partitions)
    results_in = _tail(bootstrap, topic, partition)
    raw_in = _tail(bootstrap, topic, partition)
    try:
        for i in range(warmup + samples):
            nonce = uuid.uuid4().hex.encode("ascii")
            started = time.perf_counter()
            producer.produce(topic, key=raw_key, value=nonce)
            producer.flush(WAIT)
            got = _wait_for(raw_in, _is_nonce(raw_key, nonce))
            raw_ms = (time.perf_counter() - started) * 1000.0

            envelope = new_envelope(CALLER)
            value = command_record(target_uuid, method, envelope).to_wire()
            started = time.perf_counter()
            producer.produce(topic, key=target, value=value)
            producer.flush(WAIT)
            answered = _wait_for(results_in, _is_result_of(target, method, envelope.correlation_id))
            command_ms = (time.perf_counter() - started) * 1000.0
            unanswered = 0 if answered else unanswered + 1
            if unanswered >= 3:
                raise RuntimeError(f"{target_uuid} answered none of the last 3 commands")
            if port is not None:
                measure_http(port, method, into, keep=i >= warmup)
            if i < warmup:
                continue
            if got:
                into.raw_ms.append(raw_ms)
            if answered:
                into.command_ms.append(command_ms)
            else:
                into.timeouts += 1
    finally:
        results_in.close()
        raw_in.close()
        producer.flush(5)


def _hop_ms(producer: Producer, consumer: Consumer, topic: str, key: bytes, answer: bytes = b"") -> float | None:
    """Produce a fresh nonce under ``key`` (flushed) until ``consumer`` reads it, or its ``answer``-prefixed echo."""
    nonce = uuid.uuid4().hex.encode("ascii")
    started = time.perf_counter()
    producer.produce(topic, key=key, value=(b"cmd:" if answer else b"") + nonce)
    producer.flush(WAIT)
    got = _wait_for(consumer, _is_nonce(key, answer + nonce))
    return (time.perf_counter() - started) * 1000.0 if got else None


def measure_floor(bootstrap: str, topic: str, partitions: int, samples: int, warmup: int, into: RttResult) -> None:
    """Alternate one raw hop and one command answered by the raw echo, in the same partition, each read
    by a consumer of its own as in ``measure_rtt`` (which consumer reads matters: its fetch cycle does)."""
    target = b"BENCH-RTT-ECHO"
    raw_key = _same_partition_key(target, partitions)
    partition = partition_for_key(target, partitions)
    producer = Producer({"bootstrap.servers": bootstrap, **RAW_PRODUCER_CONFIG})
    raw_in = _tail(bootstrap, topic, partition)
    results_in = _tail(bootstrap, topic, partition)
    echo = _Echo(bootstrap, topic, partition, target)
    echo.start()
    try:
        for i in range(warmup + samples):
            raw_ms = _hop_ms(producer, raw_in, topic, raw_key)
            echo_ms = _hop_ms(producer, results_in, topic, target, b"res:")
            if i >= warmup and raw_ms is not None and echo_ms is not None:
                into.echo_raw_ms.append(raw_ms)
                into.echo_ms.append(echo_ms)
    finally:
        echo.close()
        raw_in.close()
        results_in.close()
        producer.flush(5)


def run_rtt(broker: Broker, *, samples: int, warmup: int, block: int) -> RttResult:
    """Figures command_rtt_*, http_method_p50_vs_command_rtt, read_after_write_p50_ms: the app under
    ``gunicorn -w 2``, idle, as in production."""
    from harness.apps import TRIVIAL_METHOD
    from harness.measured_gunicorn import Gunicorn, ext_env

    result = RttResult()
    partitions = 8
    done = 0
    while done < samples:
        size = min(block, samples - done)
        broker.restart()
        topic = broker.create_topic(unique_name("bench-rtt"), partitions)
        env = ext_env(broker.bootstrap, topic, "BENCH-RTT", scratch_dir("locks-"))
        server = Gunicorn("harness.apps:ext_app()", env).start("/ofa/ready")
        try:
            measure_rtt(broker.bootstrap, topic, "BENCH-RTT", TRIVIAL_METHOD, partitions, size, warmup, result,
                        port=server.port)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; server log: {server.log_tail(1500)}") from None
        finally:
            server.close()
        done += size
        log(f"command round trips: {done}/{samples} ({result.timeouts} timed out)")
    for start in range(0, samples, block):  # as many samples, in blocks as large, each on a fresh broker
        broker.restart()
        size = min(block, samples - start)
        measure_floor(broker.bootstrap, broker.create_topic(unique_name("bench-rtt-floor"), partitions), partitions,
                      size, warmup, result)
        log(f"echo round trips (the broker's floor): {len(result.echo_ms)}/{samples}")
    return result


def send_commands(bootstrap: str, topic: str, target_uuid: str, method: str, count: int) -> None:
    """Fire ``count`` commands without waiting (used while the broker is flooded)."""
    producer = Producer({"bootstrap.servers": bootstrap, **RAW_PRODUCER_CONFIG})
    for _ in range(count):
        value = command_record(target_uuid, method, new_envelope(CALLER)).to_wire()
        producer.produce(topic, key=target_uuid.encode("utf-8"), value=value)
    producer.flush(WAIT)
