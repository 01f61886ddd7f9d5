"""How often the executor commits its position on the command log (real broker).

A commit is a request to the broker and a wake-up of the client's threads, which
cost about an eighth of a call's CPU when made for every command. While commands
flow, what is done is committed at most every ``commit_interval``; a quiet log's
next poll commits it at once, and so do a stop and a reader that fails. What a
crash leaves uncommitted is read again and suppressed by the results already in
the log (the SIGKILL tests of ``test_kafka_group.py`` and ``test_kafka_faults.py``
replay exactly that).
The committed position is read by a consumer of the same group, not asked of the
dispatcher.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from flask_openfactory.runtime.dispatch import Dispatcher, DispatchSettings
from flask_openfactory.transports import TransportOptions, create_transport
from flask_openfactory.transports.kafka import KafkaTransport
from flask_openfactory.wire.commands import command_record, new_envelope
from flask_openfactory.wire.methods import ofa_method, spec_of
from flask_openfactory.wire.protocol import SAMPLES, Record
from harness.broker import TansuBroker
from harness.waiting import wait_for
from kafka_config import KAFKA_TEST_CONFIG

GROUP = "executors"


class Executor:
    """A dispatcher on its own partition, the commands another asset sends it, and what ran."""

    def __init__(self, broker: TansuBroker, topic: str, lock_dir: Path) -> None:
        self.asset = f"PACE-{uuid.uuid4().hex[:8]}"
        self.topic = topic
        self.ran: list[int] = []
        transport = create_transport(f"kafka://{broker.bootstrap}", TransportOptions(
            topic=topic, kafka_config=dict(KAFKA_TEST_CONFIG), lock_dir=str(lock_dir)))
        assert isinstance(transport, KafkaTransport)
        self.transport = transport

        @ofa_method()
        def mark(n: int) -> int:
            self.ran.append(n)
            return n

        self.dispatcher = Dispatcher(
            DispatchSettings(asset_uuid=self.asset, group=GROUP, poll_interval=1.0, commit_interval=3600.0),
            transport=transport, methods=lambda: {"mark": spec_of(mark)})
        self.sender = Producer({"bootstrap.servers": broker.bootstrap, "partitioner": "murmur2_random",
                                "linger.ms": 0})
        self.group = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": GROUP,
                               "enable.auto.commit": False})
        self.log = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"log-{uuid.uuid4()}",
                             "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        self.tp = TopicPartition(topic, transport.partition_of(self.asset))
        self.log.assign([TopicPartition(topic, self.tp.partition, OFFSET_BEGINNING)])
        self.results: list[int] = []  # offsets of our _RESULT records, as another reader sees them

    def send(self, first: int, count: int) -> None:
        for n in range(first, first + count):
            record = command_record(self.asset, "mark", new_envelope("CALLER", {"n": str(n)}))
            self.sender.produce(self.topic, key=self.asset.encode(), value=record.to_wire())
        assert self.sender.flush(10) == 0

    def results_in_log(self) -> int:
        for message in self.log.consume(500, 0.05):
            if message.error() is None and message.key() == self.asset.encode() \
                    and json.loads(message.value())["ID"].endswith("_RESULT"):
                self.results.append(message.offset())
        return len(self.results)

    def committed(self) -> int:
        return int(self.group.committed([self.tp], timeout=10)[0].offset)

    @contextmanager
    def neighbour_stream(self) -> Iterator[None]:
        """Another asset writing into the partition every 10 ms: every poll brings entries, none is quiet."""
        stop = threading.Event()

        def write() -> None:
            producer = Producer({"bootstrap.servers": self.transport.bootstrap, "linger.ms": 0})
            n = 0
            while not stop.wait(0.01):
                record = Record.create("NEIGHBOUR", "level", n, tag="Level", type=SAMPLES)
                producer.produce(self.topic, key=b"NEIGHBOUR", value=record.to_wire(), partition=self.tp.partition)
                producer.poll(0)
                n += 1
            producer.flush(10)

        writer = threading.Thread(target=write, name="neighbour", daemon=True)
        writer.start()
        try:
            yield
        finally:
            stop.set()
            writer.join(10)

    def close(self) -> None:
        self.dispatcher.stop(5.0)
        self.group.close()
        self.log.close()
        self.transport.close(2.0)


@pytest.fixture
def executor(kafka_broker: TansuBroker, unique_topic: str, tmp_path: Path) -> Iterator[Executor]:
    kafka_broker.create_topic(unique_topic, 1)
    made = Executor(kafka_broker, unique_topic, tmp_path)
    made.dispatcher.start()
    wait_for(lambda: made.dispatcher.owns, 20, "the dispatcher owning the command log")
    made.send(-1, 1)  # the first commit after gaining the log is made at once
    wait_for(lambda: made.results_in_log() == 1 and made.committed() > made.results[0], 15,
             "the first command committed")
    yield made
    made.close()


def run_twenty_in_a_stream(executor: Executor) -> int:
    """Twenty commands while the log never goes quiet: the committed position must not move."""
    before = executor.committed()
    executor.send(0, 20)
    wait_for(lambda: executor.results_in_log() == 21, 20, "the twenty results in the log")
    assert executor.committed() == before  # every position done since is still uncommitted
    return executor.results[-1]


def test_commits_wait_while_commands_flow_and_come_at_once_when_the_log_is_quiet(executor: Executor) -> None:
    with executor.neighbour_stream():
        last = run_twenty_in_a_stream(executor)
    wait_for(lambda: executor.committed() > last, 10, "the quiet poll committing every done position")
    assert executor.ran == list(range(-1, 20))


def test_a_stop_commits_what_is_done_at_once(executor: Executor) -> None:
    with executor.neighbour_stream():
        last = run_twenty_in_a_stream(executor)
        executor.dispatcher.stop(5.0)  # the log never went quiet
        assert executor.committed() > last
    assert executor.ran == list(range(-1, 20))


def test_a_reader_that_fails_commits_what_is_done_before_it_is_closed(
        executor: Executor, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before, a failed reader was closed with its paced positions uncommitted: its successor read
    # every command done since the last commit again (suppressed by their results, but read).
    successor_from: list[int] = []
    open_reader = executor.transport.command_reader

    def noting_where_it_starts(*args: object) -> object:
        successor_from.append(executor.committed())  # the group's position, as the successor finds it
        return open_reader(*args)  # type: ignore[arg-type]

    with executor.neighbour_stream():
        last = run_twenty_in_a_stream(executor)
        reader = executor.dispatcher._reader
        assert reader is not None
        poll = reader.poll

        def fails_once(timeout: float) -> list:
            reader.poll = poll  # type: ignore[method-assign]
            raise RuntimeError("the consumer broke")

        monkeypatch.setattr(executor.transport, "command_reader", noting_where_it_starts)
        reader.poll = fails_once  # type: ignore[method-assign]
        wait_for(lambda: successor_from, 15, "the successor of the reader that failed")
        assert successor_from[0] > last  # while the log never went quiet
    assert executor.ran == list(range(-1, 20))
