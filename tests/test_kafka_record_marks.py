"""How our Kafka readers recognise the attribute records our producers write, without decoding them.

An attribute write carries one header, the writing process's origin (earlier versions
wrote ``ofa-kind: attribute`` first and the origin last: a rolling upgrade mixes both).
The follower of a process (and its command reader while it reads by itself) also knows the
bytes this process just wrote and passes over those by a set lookup; that is a shortcut
only, so every test here also holds when the set was emptied or never filled.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Producer

from flask_openfactory.transports import CommandReader, Follower, LogEntry, TransportOptions, create_transport
from flask_openfactory.transports.kafka import KafkaTransport
from flask_openfactory.transports.kafka.producer import WRITTEN_LIMIT
from flask_openfactory.wire.protocol import EVENTS, SAMPLES, Record
from harness.waiting import wait_for
from kafka_config import KAFKA_TEST_CONFIG

KEY = "ASSET-MARKS"
GROUP = "executors"

Make = Callable[[], KafkaTransport]


@pytest.fixture
def make(kafka_broker: Any, unique_topic: str) -> Iterator[Make]:
    kafka_broker.create_topic(unique_topic, 1)
    made: list[KafkaTransport] = []

    def factory() -> KafkaTransport:
        transport = create_transport(f"kafka://{kafka_broker.bootstrap}",
                                     TransportOptions(topic=unique_topic, kafka_config=dict(KAFKA_TEST_CONFIG)))
        assert isinstance(transport, KafkaTransport)
        made.append(transport)
        return transport

    yield factory
    for transport in reversed(made):
        transport.close(2.0)


def raw_write(transport: KafkaTransport, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
    """Another producer's write: no marks of ours unless ``headers`` brings them."""
    producer = Producer({"bootstrap.servers": transport.bootstrap, "partitioner": "murmur2_random"})
    producer.produce(transport.topic, key=KEY.encode(), value=value, headers=headers)
    assert producer.flush(10) == 0


def attribute(attr_id: str, value: object) -> Record:
    return Record.create(KEY, attr_id, value, tag="Tag", type=SAMPLES)


def command(n: int) -> Record:
    return Record.create(KEY, "run_CMD", f"call-{n}", tag="Method.Command", type="OpenFactory")


def read_until(reader: CommandReader, last: Record, timeout: float = 10.0) -> list[LogEntry]:
    got: list[LogEntry] = []

    def done() -> bool:
        got.extend(entry for entry in reader.poll(0.05) if entry.key == KEY)
        return any(entry.record == last for entry in got)

    wait_for(done, timeout, interval=0)
    return got


def own(reader: CommandReader) -> None:
    wait_for(lambda: (reader.poll(0.05), reader.owns)[1], 10.0, interval=0)


def test_the_command_reader_passes_over_every_marked_attribute_write_and_reports_the_rest(make: Make) -> None:
    executor, other = make(), make()
    reader = executor.command_reader(KEY, GROUP)
    own(reader)
    assert executor.written_sets == (set(),)  # filled from now on: this process's reader reads

    mine = [attribute("x", n) for n in range(5)]
    for record in mine:
        executor.publish(record)
    other.publish(attribute("y", 1))  # another process, today's mark
    assert executor.flush(5) == 0 and other.flush(5) == 0
    old = attribute("z", 2)  # an earlier version's marks
    raw_write(executor, old.to_wire(), [("ofa-kind", b"attribute"), ("ofa-origin", b"0" * 32)])
    unmarked = attribute("w", 3)  # a well-formed attribute record another tool wrote: decoded
    raw_write(executor, unmarked.to_wire())
    raw_write(executor, b'{"ID": "x", "VALUE": 1}')  # malformed, unmarked: reported
    last = command(1)
    other.publish(last)
    assert other.flush(5) == 0

    got = read_until(reader, last)
    assert [entry.record for entry in got] == [unmarked, None, last]
    assert got[1].error and "TYPE" in got[1].error
    assert executor.written_sets == (set(),)  # each of its own writes was recognised by its bytes
    reader.close()
    assert executor.written_sets == ()  # no reader: publishing keeps nothing
    executor.publish(attribute("x", 99))
    assert executor.written_sets == ()


def test_the_reader_falls_back_to_the_marks_when_it_falls_behind_the_written_set(make: Make) -> None:
    """More writes than the set keeps while the reader does not read: the set stays bounded, and
    the attribute writes it forgot are still passed over (by their header)."""
    executor = make()
    reader = executor.command_reader(KEY, GROUP)
    own(reader)
    for n in range(WRITTEN_LIMIT + 50):
        executor.publish(attribute("x", n))
        assert all(len(written) <= WRITTEN_LIMIT for written in executor.written_sets)
    last = command(2)
    executor.publish(last)
    assert executor.flush(10) == 0

    assert [entry.record for entry in read_until(reader, last)] == [last]
    reader.close()


def test_a_follower_skips_only_its_own_process_writes_in_either_format(make: Make) -> None:
    writer, watcher = make(), make()
    follower = writer.follow(KEY, skip_own_writes=True)
    others = watcher.follow(KEY, skip_own_writes=True)
    first = attribute("x", 1)
    writer.publish(first)
    assert writer.flush(5) == 0
    old = Record.create(KEY, "mode", "auto", tag="Mode", type=EVENTS)  # another process, an earlier version
    raw_write(writer, old.to_wire(), [("ofa-kind", b"attribute"), ("ofa-origin", b"f" * 32)])
    theirs = attribute("x", 2)
    watcher.publish(theirs)
    assert watcher.flush(5) == 0
    last = attribute("end", 1)
    writer.publish(last)
    assert writer.flush(5) == 0

    def follow(of: Follower, until: Record) -> list[Record]:
        seen: list[Record] = []
        wait_for(lambda: (seen.extend(of.poll(0.05)), until in seen)[1], 10.0, interval=0)
        return seen

    assert follow(follower, theirs) == [old, theirs]  # its own writes were applied when made
    assert follow(others, last) == [first, old, last]
    end = writer.end_position(KEY)
    wait_for(lambda: (follower.poll(0.05), follower.position >= end)[1], 10.0, interval=0)
    assert writer.written_sets == (set(),)  # the follower recognised its own writes by their bytes
    follower.close()
    others.close()
    assert writer.written_sets == watcher.written_sets == ()


def test_a_follower_behind_the_written_set_still_skips_its_own_writes_by_their_mark(make: Make) -> None:
    writer = make()
    follower = writer.follow(KEY, skip_own_writes=True)
    for n in range(WRITTEN_LIMIT + 50):  # the set is emptied once on the way: the first ones are forgotten
        writer.publish(attribute("x", n))
    last = command(3)
    writer.publish(last)
    assert writer.flush(10) == 0
    seen: list[Record] = []
    wait_for(lambda: (seen.extend(follower.poll(0.05)), last in seen)[1], 10.0, interval=0)
    assert seen == [last]
    follower.close()


def test_readers_joining_and_leaving_at_once_keep_every_written_set() -> None:
    # Each reader's set joins and leaves ``written_sets`` by replacing the whole tuple (the producer
    # reads it without a lock). Two readers doing it at once must not drop one another's set: a
    # dropped set is a reader that takes this process's own writes for another's.
    transport = create_transport("kafka://127.0.0.1:9", TransportOptions(topic="never-contacted"))
    assert isinstance(transport, KafkaTransport)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over between nearly every bytecode
    try:
        joined: list[list[set[bytes]]] = [[] for _ in range(8)]

        def join(mine: list[set[bytes]]) -> None:
            for _ in range(500):
                mine.append(transport.track_written())

        def leave(mine: list[set[bytes]]) -> None:
            for written in mine[::2]:
                transport.untrack_written(written)

        for work in (join, leave):
            threads = [threading.Thread(target=work, args=(mine,)) for mine in joined]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
    finally:
        sys.setswitchinterval(switch)
        transport.close(1.0)
    kept = {id(written) for written in transport.written_sets}
    assert kept == {id(written) for mine in joined for written in mine[1::2]}
    assert len(transport.written_sets) == 8 * 250
