"""Kafka as another asset sees it: a sender of commands and a reader of the whole topic.

The multi-process tests observe a served asset from outside; these write its
``<method>_CMD`` records as any other asset would and read back everything it
writes (``TopicWatcher``), with helpers to pick out its results.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from flask_openfactory.transports.kafka.messages import GapGuard
from flask_openfactory.wire.commands import CommandResult, command_record, is_result, new_envelope
from flask_openfactory.wire.protocol import Record, RecordError

__all__ = ["CommandSender", "Seen", "TopicWatcher", "answered", "results_by_cid"]

T = TypeVar("T")
_client_log = logging.getLogger("harness.topic_watch.kafka")  # librdkafka's lines, captured by pytest


class CommandSender:
    """Writes ``<method>_CMD`` records on the target asset, as any other asset would."""

    def __init__(self, bootstrap: str, topic: str, target_uuid: str, sender_uuid: str) -> None:
        self.topic = topic
        self.target = target_uuid
        self.sender = sender_uuid
        self.failures: list[str] = []
        self._producer = Producer({
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",  # Java's: the partition the target reads its commands from
            "linger.ms": 0,
            "enable.idempotence": True,
            "logger": _client_log,
        })

    def _report(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.failures.append(error.str())

    def publish(self, record: Record) -> None:
        self._producer.produce(self.topic, key=record.key, value=record.to_wire(), on_delivery=self._report)
        self._producer.poll(0)

    def send(self, method: str, arguments: Mapping[str, Any] | None = None) -> str:
        """Queue one command; return its correlation id."""
        envelope = new_envelope(self.sender, dict(arguments or {}))
        self.publish(command_record(self.target, method, envelope))
        return envelope.correlation_id

    def flush(self, timeout: float = 15.0) -> None:
        remaining = self._producer.flush(timeout)
        assert remaining == 0, f"{remaining} command(s) not delivered to the broker within {timeout:g} s"
        assert not self.failures, f"delivery failures: {self.failures[:5]}"


@dataclass(frozen=True)
class Seen:
    """One record of the watched asset, with when this process received it."""

    received: float
    partition: int
    offset: int
    record: Record


class TopicWatcher:
    """Reads every partition of the topic from the beginning and keeps the asset's records.

    Each test owns its topic, so assigning all partitions from the beginning
    sees everything that was written, in partition order. The test broker can
    serve a batch before an earlier one is readable; offsets skipped so are read
    again (the package's own guard), or the watcher would miss what was written.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int, asset_uuid: str) -> None:
        self.asset_uuid = asset_uuid
        self._key = asset_uuid.encode("utf-8")
        self._cond = threading.Condition()
        self._seen: list[Seen] = []
        self._errors: list[str] = []
        self._topic = topic
        self._next = dict.fromkeys(range(partitions), 0)  # the offset expected next, per partition
        self._gaps = {p: GapGuard() for p in range(partitions)}
        self.gap_stats = {"gaps_read_again": 0, "gaps_accepted": 0}
        self._stop = threading.Event()
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": f"watcher-{uuid.uuid4()}",  # assign() only: never joins
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 10,
            "fetch.min.bytes": 1,
            "logger": _client_log,
        })
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        self._thread = threading.Thread(target=self._run, name="topic-watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    messages = self._consumer.consume(500, 0.05)
                except Exception as exc:  # reported by the waits, never raised in the thread
                    self._errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                now = time.monotonic()
                batch = []
                reread: set[int] = set()  # partitions seeked back: the rest of their records comes again
                for message in messages:
                    if message.error() is not None:
                        continue
                    partition, offset = cast(int, message.partition()), cast(int, message.offset())
                    if partition in reread or self._gaps[partition].read_again(
                            self._consumer, TopicPartition(self._topic, partition), self._next[partition], offset,
                            what="the test's topic watcher", stats=self.gap_stats):
                        reread.add(partition)
                        continue
                    self._next[partition] = max(self._next[partition], offset + 1)
                    if message.key() != self._key:
                        continue
                    try:
                        record = Record.from_wire(message.key(), message.value())
                    except RecordError:
                        continue
                    batch.append(Seen(now, partition, offset, record))
                if batch:
                    with self._cond:
                        self._seen.extend(batch)
                        self._cond.notify_all()
        finally:
            self._consumer.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    @property
    def seen(self) -> list[Seen]:
        with self._cond:
            return list(self._seen)

    def wait(self, predicate: Callable[[list[Seen]], T], timeout: float, what: str) -> T:
        """Wait until ``predicate(records so far)`` is truthy."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(self._seen)
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; "
                                         f"{len(self._seen)} records seen; errors: {self._errors[:3]}; "
                                         f"gaps in what the broker served: {self.gap_stats}")
                self._cond.wait(min(remaining, 0.5))

    def barrier(self, sender: CommandSender, timeout: float = 15.0) -> None:
        """Write a marker on the asset's partition and wait for it: everything before it is read."""
        token = uuid.uuid4().hex
        sender.publish(Record.create(self.asset_uuid, "test_barrier", token, tag="Test.Barrier", type="Events"))
        sender.flush(timeout)
        self.wait(lambda seen: any(s.record.id == "test_barrier" and s.record.value == token for s in seen),
                  timeout, "the barrier record")

    def results(self, method: str | None = None) -> dict[str, list[tuple[Seen, CommandResult]]]:
        """Results per correlation id (of ``method``, or of every method)."""
        return results_by_cid(self.seen, method)

    def values(self, attr_id: str) -> list[Seen]:
        return [s for s in self.seen if s.record.id == attr_id]


def results_by_cid(seen: Iterable[Seen], method: str | None = None) -> dict[str, list[tuple[Seen, CommandResult]]]:
    found: dict[str, list[tuple[Seen, CommandResult]]] = {}
    for s in seen:
        if not is_result(s.record) or (method is not None and s.record.id != f"{method}_RESULT"):
            continue
        result = CommandResult.from_record(s.record)
        found.setdefault(str(result.correlation_id), []).append((s, result))
    return found


def answered(cids: Iterable[str], method: str | None = None) -> Callable[[list[Seen]], bool]:
    """A ``TopicWatcher.wait`` predicate: every one of ``cids`` has a result."""
    wanted = set(cids)

    def check(seen: list[Seen]) -> bool:
        return wanted <= results_by_cid(seen, method).keys()

    return check
