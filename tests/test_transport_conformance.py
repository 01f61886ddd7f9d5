"""One behaviour for every transport: the semantics documented in transports/base.py.

Each test runs once per backend. A backend adapter knows how to build a new
transport instance on one shared store (several instances stand in for several
processes) and how to write a raw, possibly malformed value into the log, which
the public API refuses to do. Adding a backend is one adapter class and one
entry in BACKENDS; tests wait on conditions with timeouts, never on fixed
sleeps, so that asynchronous backends (Kafka) pass the same tests.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import TypeVar

import pytest

from flask_openfactory.transports import (
    CommandReader,
    Follower,
    LogEntry,
    Transport,
    TransportOptions,
    create_transport,
)
from flask_openfactory.transports.memory import memory_log
from flask_openfactory.wire.protocol import EVENTS, SAMPLES, Record
from harness.waiting import wait_for
from kafka_config import KAFKA_TEST_CONFIG

T = TypeVar("T")

KEY = "ASSET-A"
OTHER = "ASSET-B"
GROUP = "executors"


# --- backends -----------------------------------------------------------------


class Backend:
    """Per-transport specifics: everything else in this module is shared.

    Built once per test from the pytest request, so an adapter can use other
    fixtures. A Kafka adapter would be, in outline::

        class KafkaBackend(Backend):
            def __init__(self, request):
                self.broker = request.getfixturevalue("kafka_broker")
                self.topic = request.getfixturevalue("unique_topic")
            def make(self):
                return create_transport("kafka://" + self.broker.bootstrap, TransportOptions(topic=self.topic))
            def raw_write(self, key, value):
                ...  # a plain confluent_kafka Producer on self.topic, then flush

    plus ``"kafka": KafkaBackend`` in BACKENDS.
    """

    def make(self) -> Transport:
        raise NotImplementedError

    def raw_write(self, key: str | None, value: bytes | None) -> None:
        raise NotImplementedError


class MemoryBackend(Backend):
    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.name = f"conformance-{uuid.uuid4().hex}"

    def make(self) -> Transport:
        return create_transport(f"memory://{self.name}")

    def raw_write(self, key: str | None, value: bytes | None) -> None:
        memory_log(self.name).append(key, value)


class SqliteBackend(Backend):
    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.path: Path = request.getfixturevalue("tmp_path") / "log.db"

    def make(self) -> Transport:
        return create_transport(f"sqlite:///{self.path}", TransportOptions(publish_timeout=5.0))

    def raw_write(self, key: str | None, value: bytes | None) -> None:
        # Another writer of the same file, bypassing the transport's encoding;
        # a transport's first use creates the schema this insert needs.
        probe = self.make()
        probe.check(5.0)
        probe.close()
        with closing(sqlite3.connect(self.path, timeout=5.0)) as conn, conn:
            conn.execute(
                "INSERT INTO log (key, value, written_at) VALUES (?, ?, ?)", (key, value, time.time())
            )


class KafkaBackend(Backend):
    """The real broker; the asset keys of this module share one partition or not, by chance."""

    PARTITIONS = 3

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self.broker = request.getfixturevalue("kafka_broker")
        self.topic = request.getfixturevalue("unique_topic")
        self.broker.create_topic(self.topic, self.PARTITIONS)

    def make(self) -> Transport:
        return create_transport(
            "kafka://" + self.broker.bootstrap,
            TransportOptions(topic=self.topic, kafka_config=dict(KAFKA_TEST_CONFIG)),
        )

    def raw_write(self, key: str | None, value: bytes | None) -> None:
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.broker.bootstrap, "partitioner": "murmur2_random"})
        producer.produce(self.topic, key=None if key is None else key.encode(), value=value)
        assert producer.flush(10) == 0


BACKENDS: dict[str, Callable[[pytest.FixtureRequest], Backend]] = {
    "memory": MemoryBackend,
    "sqlite": SqliteBackend,
    "kafka": KafkaBackend,
}


@pytest.fixture(autouse=True)
def _own_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """A group per test: on the shared broker a failed test's members must not stall the next."""
    monkeypatch.setattr(__import__(__name__), "GROUP", f"executors-{uuid.uuid4().hex[:8]}")


class TransportFactory:
    """``factory()`` builds a new transport on the test's store; closed at teardown."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.created: list[Transport] = []

    def __call__(self) -> Transport:
        transport = self.backend.make()
        self.created.append(transport)
        return transport

    def raw_write(self, key: str | None, value: bytes | None) -> None:
        self.backend.raw_write(key, value)


@pytest.fixture(params=sorted(BACKENDS))
def transport_factory(request: pytest.FixtureRequest) -> Iterator[TransportFactory]:
    factory = TransportFactory(BACKENDS[request.param](request))
    yield factory
    for transport in reversed(factory.created):
        transport.close(2.0)


# --- helpers --------------------------------------------------------------------




def record(key: str, attribute: str, value: object, type: str = EVENTS) -> Record:
    return Record.create(key, attribute, value, tag=f"Tag.{attribute}", type=type)


def publish_all(transport: Transport, *records: Record) -> None:
    for item in records:
        transport.publish(item)
    assert transport.flush(5.0) == 0


def follow_until(follower: Follower, done: Callable[[list[Record]], bool], timeout: float = 5.0) -> list[Record]:
    got: list[Record] = []

    def finished() -> bool:
        got.extend(follower.poll(0.05))
        return done(got)

    wait_for(finished, timeout, interval=0)
    return got


def read_until(
    reader: CommandReader, done: Callable[[list[LogEntry]], bool], key: str = KEY, timeout: float = 5.0
) -> list[LogEntry]:
    """Entries of ``key`` (a log may interleave other assets' entries) until ``done``."""
    got: list[LogEntry] = []

    def finished() -> bool:
        got.extend(entry for entry in reader.poll(0.05) if entry.key == key)
        return done(got)

    wait_for(finished, timeout, interval=0)
    return got


def contains(target: Record) -> Callable[[list], bool]:
    """``done`` for follow_until / read_until: stop once ``target`` was seen."""

    def seen(items: list) -> bool:
        return any((item.record if isinstance(item, LogEntry) else item) == target for item in items)

    return seen


def become_owner(reader: CommandReader, timeout: float = 5.0) -> list[LogEntry]:
    """Poll until ``reader`` owns its log; return what it read meanwhile (all keys)."""
    got: list[LogEntry] = []

    def owned() -> bool:
        got.extend(reader.poll(0.05))
        return reader.owns

    wait_for(owned, timeout, interval=0)
    return got


# --- publish and snapshot -------------------------------------------------------


def test_snapshot_holds_the_last_record_per_id_of_its_key_only(transport_factory: TransportFactory) -> None:
    transport = transport_factory()
    first = record(KEY, "temp", 20.5, SAMPLES)
    latest = record(KEY, "temp", 21.25, SAMPLES)
    mode = record(KEY, "mode", "AUTO")
    elsewhere = record(OTHER, "temp", 99, SAMPLES)
    publish_all(transport, first, mode, elsewhere, latest)

    expected = {"temp": latest, "mode": mode}
    assert wait_for(lambda: transport.snapshot(KEY) == expected)
    snapshot = transport.snapshot(KEY)
    assert snapshot["temp"].value == 21.25 and snapshot["temp"].type == SAMPLES
    assert snapshot["temp"].tag == "Tag.temp" and snapshot["temp"].timestamp == latest.timestamp
    assert wait_for(lambda: transport.snapshot(OTHER) == {"temp": elsewhere})
    assert transport.snapshot("ASSET-UNKNOWN") == {}
    # The state is the store's, not the instance's.
    assert wait_for(lambda: transport_factory().snapshot(KEY) == expected)


def test_on_delivery_is_called_exactly_once_with_none(transport_factory: TransportFactory) -> None:
    transport = transport_factory()
    reports: dict[str, list[Exception | None]] = {"a": [], "b": [], "c": []}
    for attribute, calls in reports.items():
        transport.publish(record(KEY, attribute, 1), calls.append)
    assert transport.flush(5.0) == 0
    wait_for(lambda: all(reports.values()))
    assert transport.flush(1.0) == 0
    assert reports == {"a": [None], "b": [None], "c": [None]}


# --- followers ------------------------------------------------------------------


def test_follower_returns_new_records_of_its_key_in_order(transport_factory: TransportFactory) -> None:
    transport = transport_factory()
    before = record(KEY, "old", 0)
    publish_all(transport, before)
    follower = transport.follow(KEY)
    ours = [record(KEY, "x", value) for value in range(3)]
    publish_all(transport, ours[0], record(OTHER, "x", 100), ours[1], record(OTHER, "y", 101), ours[2])
    sentinel = record(KEY, "end", True)
    publish_all(transport, sentinel)

    got = follow_until(follower, contains(sentinel))
    assert got == [*ours, sentinel]
    follower.close()


def test_follower_sees_records_published_by_another_instance(transport_factory: TransportFactory) -> None:
    writer, watcher = transport_factory(), transport_factory()
    follower = watcher.follow(KEY)
    published = [record(KEY, "count", value, SAMPLES) for value in (1, 2)]
    publish_all(writer, *published)

    assert follow_until(follower, lambda got: len(got) >= 2) == published
    follower.close()


def test_follower_skips_values_it_cannot_decode(transport_factory: TransportFactory) -> None:
    transport = transport_factory()
    follower = transport.follow(KEY)
    transport_factory.raw_write(KEY, b"{not json")
    transport_factory.raw_write(KEY, None)
    good = record(KEY, "after", "ok")
    publish_all(transport, good)

    assert follow_until(follower, contains(good)) == [good]
    follower.close()


def test_a_reopened_follower_resumes_where_the_last_one_stopped(transport_factory: TransportFactory) -> None:
    """A follower reopened after a fault is given the old one's position: what was
    written in between is returned, not skipped (it would be missing from the state)."""
    writer, watcher = transport_factory(), transport_factory()
    first = watcher.follow(KEY)
    seen = record(KEY, "x", 0)
    publish_all(writer, seen)
    assert follow_until(first, contains(seen)) == [seen]
    first.close()
    meanwhile = [record(KEY, "x", value) for value in (1, 2)]
    publish_all(writer, meanwhile[0], record(OTHER, "x", 100), meanwhile[1])
    reopened = watcher.follow(KEY, resume=first)
    after = record(KEY, "end", True)
    publish_all(writer, after)

    assert follow_until(reopened, contains(after)) == [*meanwhile, after]
    reopened.close()


def test_closed_follower_stops_waiting(transport_factory: TransportFactory) -> None:
    follower = transport_factory().follow(KEY)
    follower.close()
    started = time.monotonic()
    follower.poll(5.0)
    assert time.monotonic() - started < 1.0


# --- command readers ------------------------------------------------------------


def test_first_reader_owns_and_starts_at_the_end(transport_factory: TransportFactory) -> None:
    transport = transport_factory()
    old = [record(KEY, "run_CMD", f"old-{n}") for n in range(2)]
    publish_all(transport, *old, record(OTHER, "run_CMD", "other"))

    reader = transport.command_reader(KEY, GROUP)
    assert reader.generation == 0
    seen_while_joining = become_owner(reader)
    assert reader.generation >= 1
    assert not [entry for entry in seen_while_joining if entry.key == KEY]

    new = [record(KEY, "run_CMD", f"new-{n}") for n in range(3)]
    publish_all(transport, new[0], record(OTHER, "run_CMD", "other"), new[1], new[2])
    got = read_until(reader, contains(new[-1]))
    assert [entry.record for entry in got] == new
    assert all(entry.error is None for entry in got)
    offsets = [entry.offset for entry in got]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    reader.close()


def test_first_ownership_commits_its_start_position_at_once(transport_factory: TransportFactory) -> None:
    transport = transport_factory()
    publish_all(transport, record(KEY, "run_CMD", "before"))
    first = transport.command_reader(KEY, GROUP)
    become_owner(first)
    first.close()  # nothing committed by hand

    after = record(KEY, "run_CMD", "after")
    publish_all(transport, after)
    second = transport_factory().command_reader(KEY, GROUP)
    # Had the start not been stored, the successor would replay "before" too.
    assert [entry.record for entry in read_until(second, contains(after))] == [after]
    assert second.owns
    second.close()


def test_second_reader_takes_over_after_the_owner_closes(transport_factory: TransportFactory) -> None:
    first_process, second_process = transport_factory(), transport_factory()
    owner = first_process.command_reader(KEY, GROUP)
    become_owner(owner)
    standby = second_process.command_reader(KEY, GROUP)

    commands = [record(KEY, "run_CMD", n) for n in range(3)]
    publish_all(first_process, *commands)
    assert standby.poll(0.3) == []
    assert not standby.owns and not standby.caught_up()

    # Every reader is polled all the time in a real process (its dispatcher
    # thread); a group member that stops polling mid-rebalance stalls the group.
    def owner_has_all(entries: list[LogEntry]) -> bool:
        assert standby.poll(0.01) == []
        return len(entries) >= 3

    got = read_until(owner, owner_has_all)
    assert [entry.record for entry in got] == commands
    assert standby.poll(0.1) == [] and not standby.owns

    owner.commit(got[0].offset)
    generation_before = standby.generation
    owner.close()
    assert not owner.owns and owner.poll(0.05) == []

    tail = record(KEY, "run_CMD", "tail")
    publish_all(second_process, tail)
    replayed = read_until(standby, contains(tail))
    assert standby.owns and standby.generation > generation_before
    # Uncommitted entries come again, at the same offsets; the committed one does not.
    assert [entry.record for entry in replayed] == [*commands[1:], tail]
    assert [entry.offset for entry in replayed[:2]] == [entry.offset for entry in got[1:]]
    standby.close()


def test_readers_of_different_groups_are_independent(transport_factory: TransportFactory) -> None:
    transport = transport_factory()
    one = transport.command_reader(KEY, "group-one")
    two = transport_factory().command_reader(KEY, "group-two")
    become_owner(one)
    become_owner(two)
    command = record(KEY, "run_CMD", 1)
    publish_all(transport, command)
    assert [entry.record for entry in read_until(one, contains(command))] == [command]
    assert [entry.record for entry in read_until(two, contains(command))] == [command]
    one.close()
    two.close()


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"this is not json", id="not-json"),
        pytest.param(b"[1, 2, 3]", id="json-array"),
        pytest.param(b'{"VALUE": 1, "TAG": "t", "TYPE": "Events"}', id="missing-id"),
        pytest.param(None, id="null-value"),
    ],
)
def test_undecodable_entries_are_reported_and_reading_goes_on(
    transport_factory: TransportFactory, raw: bytes | None
) -> None:
    transport = transport_factory()
    reader = transport.command_reader(KEY, GROUP)
    become_owner(reader)
    transport_factory.raw_write(KEY, raw)
    good = record(KEY, "run_CMD", "valid")
    publish_all(transport, good)

    got = read_until(reader, contains(good))
    assert len(got) == 2
    bad, valid = got
    assert bad.record is None and isinstance(bad.error, str) and bad.error
    assert bad.key == KEY and bad.offset < valid.offset
    assert valid.record == good and valid.error is None
    reader.close()


def test_commit_never_moves_back(transport_factory: TransportFactory) -> None:
    transport = transport_factory()
    owner = transport.command_reader(KEY, GROUP)
    become_owner(owner)
    commands = [record(KEY, "run_CMD", n) for n in range(3)]
    publish_all(transport, *commands)
    got = read_until(owner, lambda entries: len(entries) >= 3)
    owner.commit(got[2].offset)
    owner.commit(got[0].offset)  # a late, lower commit must not rewind the group
    owner.close()

    later = record(KEY, "run_CMD", "later")
    publish_all(transport, later)
    successor = transport_factory().command_reader(KEY, GROUP)
    assert [entry.record for entry in read_until(successor, contains(later))] == [later]
    successor.close()


def test_commit_by_a_reader_that_does_not_own_is_ignored(transport_factory: TransportFactory) -> None:
    transport = transport_factory()
    owner = transport.command_reader(KEY, GROUP)
    become_owner(owner)
    commands = [record(KEY, "run_CMD", n) for n in range(2)]
    publish_all(transport, *commands)
    got = read_until(owner, lambda entries: len(entries) >= 2)

    intruder = transport_factory().command_reader(KEY, GROUP)
    assert intruder.poll(0.1) == [] and not intruder.owns
    intruder.commit(got[-1].offset)
    owner.close()
    # The intruder becomes owner now, and must still see both uncommitted commands.
    assert [entry.record for entry in read_until(intruder, lambda entries: len(entries) >= 2)] == commands
    intruder.close()


def test_caught_up_after_reading_everything(transport_factory: TransportFactory) -> None:
    transport = transport_factory()
    reader = transport.command_reader(KEY, GROUP)
    assert not reader.caught_up()  # not the owner yet
    become_owner(reader)
    wait_for(reader.caught_up)

    commands = [record(KEY, "run_CMD", n) for n in range(2)]
    publish_all(transport, *commands)
    assert not reader.caught_up()
    read_until(reader, lambda entries: len(entries) >= 2)
    assert wait_for(lambda: reader.poll(0.05) == [] and reader.caught_up())
    reader.close()
    assert not reader.caught_up()


def test_a_reader_behind_a_log_written_on_catches_up_to_the_end_it_saw(transport_factory: TransportFactory) -> None:
    # While anything writes to the log (an app publishing attributes all the time), the end
    # moves on between each read and each look at it: an owner that waited for "nothing past
    # my position now" could wait for ever, holding every command back.
    transport = transport_factory()
    reader = transport.command_reader(KEY, GROUP)
    become_owner(reader)
    wait_for(reader.caught_up)
    publish_all(transport, *[record(KEY, "run_CMD", n) for n in range(3)])
    assert not reader.caught_up()  # behind the end it sees: that end is its goal
    read_until(reader, lambda entries: len(entries) >= 3)
    publish_all(transport, *[record(KEY, "run_CMD", n) for n in range(3, 6)])  # the end moves on
    assert reader.caught_up()  # the goal is reached, whatever came after it
    assert not reader.caught_up()  # a new look: the end now, three entries on
    assert len(read_until(reader, lambda entries: len(entries) >= 3)) == 3
    assert wait_for(lambda: reader.poll(0.05) == [] and reader.caught_up())
    reader.close()


# --- health ---------------------------------------------------------------------


def test_check_and_health_report_ok(transport_factory: TransportFactory) -> None:
    transport = transport_factory()
    checked = transport.check(5.0)
    assert checked.ok, checked.detail
    assert isinstance(checked.detail, str) and checked.detail
    assert transport.health().ok
