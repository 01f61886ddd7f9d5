"""Issue 12 acceptance, Kafka: the log's own failures under gunicorn, against the real test broker.

* The topic deleted and recreated under a running server: the executor's
  position lies beyond the new partition's end; it says so and executes a
  command written afterwards.
* The broker goes away for 10 s and comes back without its state (the test
  broker keeps everything in memory, as a broker that lost its data would):
  at most a handful of log lines for the outage, the positions beyond the
  recreated partitions' ends are reported, the producers (whose ids and
  sequence numbers belong to the old log) are recreated, and writes and
  commands succeed again.
* A stuck outgoing queue (in process: the same broker restart, no reader to
  notice it first) is named by readiness and recreated.
* A real fatal producer error (in process: out-of-sequence write after the
  restarted broker gave this producer's id to another) recreates the client,
  and the failed write is made by the new one.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from flask_openfactory.transports.base import TransportError, TransportOptions
from flask_openfactory.transports.kafka import KafkaTransport
from flask_openfactory.transports.kafka import producer as kafka_transport
from flask_openfactory.wire.protocol import Record
from harness.broker import TansuBroker
from harness.gunicorn_server import GunicornServer
from harness.topic_watch import CommandSender, TopicWatcher
from harness.waiting import wait_for
from probe_apps import executions
from test_gunicorn_kafka import PARTITIONS, Deployment, deployment_on


@pytest.fixture
def deployment(kafka_broker: TansuBroker, unique_topic: str, tmp_path: Path) -> Iterator[Deployment]:
    yield from deployment_on(kafka_broker, unique_topic, tmp_path)


@pytest.fixture
def own_deployment(own_broker: TansuBroker, unique_topic: str, tmp_path: Path) -> Iterator[Deployment]:
    yield from deployment_on(own_broker, unique_topic, tmp_path)


def fresh_clients(deployment: Deployment, broker: TansuBroker) -> None:
    """The test's own sender and watcher on the recreated topic (the old ones knew the old one)."""
    deployment.watcher.close()  # else it polls a stopped broker for the rest of the session
    deployment.watcher = TopicWatcher(broker.bootstrap, deployment.topic, PARTITIONS, deployment.asset)
    deployment.sender = CommandSender(broker.bootstrap, deployment.topic, deployment.asset,
                                      sender_uuid="gunicorn-test-caller")


def run_one(deployment: Deployment, tag: str, timeout: float = 60) -> None:
    sent = deployment.send_records(1, tag)
    deployment.wait_answered(sent, timeout=timeout)
    assert executions(deployment.effects)[f"{tag}-0"] == 1


class ReadyWatch:
    """Polls /ofa/ready in a thread and keeps the details of every 503 answer."""

    def __init__(self, server: GunicornServer) -> None:
        self.server = server
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                answer = self.server.get("/ofa/ready", timeout=5)
            except requests.RequestException:
                continue
            if answer.status_code == 503:
                self.failures.append(json.dumps(answer.json()["checks"]))

    def __enter__(self) -> ReadyWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def log_lines_since(server: GunicornServer, mark: int) -> list[str]:
    return server.log_text().splitlines()[mark:]


@pytest.mark.gunicorn
def test_topic_deleted_and_recreated_under_a_running_server(deployment: Deployment,
                                                             kafka_broker: TansuBroker) -> None:
    """What holds here: a command written afterwards runs once, and nothing answered runs again.

    Seen with this broker: librdkafka 2.16 crashes (SIGSEGV in its metadata
    cache) in every client that knows a topic Tansu deletes, so the workers
    die and gunicorn replaces them; the report of a live position beyond the
    end is shown by the broker-restart test below, where the clients survive.
    """
    server = deployment.start(workers=2)
    sent = deployment.send_records(20, "before")
    deployment.wait_answered(sent)

    deployment.watcher.close()  # the test's own clients go first (they would crash too)
    del deployment.sender
    kafka_broker.delete_topic(deployment.topic)
    kafka_broker.create_topic(deployment.topic, PARTITIONS)
    recreated_at = time.monotonic()
    fresh_clients(deployment, kafka_broker)
    server.wait_ready(60)
    reset = "recreated or truncated" in server.log_text()
    crashed = server.log_text().count("was sent SIGSEGV")
    print(f"\nready again {time.monotonic() - recreated_at:.2f} s after the topic was recreated; "
          f"position reset reported: {reset}; workers lost to SIGSEGV: {crashed}")

    started = time.monotonic()
    run_one(deployment, "after")
    print(f"a command written afterwards answered in {time.monotonic() - started:.2f} s")
    done = executions(deployment.effects)
    assert set(done.values()) == {1} and len(done) == 21, done


@pytest.mark.gunicorn
def test_broker_outage_of_10_s_few_log_lines_then_recreated_producer_writes(
        own_deployment: Deployment, own_broker: TansuBroker) -> None:
    deployment = own_deployment
    server = deployment.start(workers=2)
    run_one(deployment, "before")
    mark = len(server.log_text().splitlines())

    own_broker.pause()
    paused = time.monotonic()
    wait_for(lambda: server.get("/ofa/ready").status_code == 503, 10, "ready 503 while the broker is away")
    outage = max(0.0, 10.0 - (time.monotonic() - paused))
    time.sleep(outage)  # the outage itself: its length is the fault under test, not a wait for a condition
    during = log_lines_since(server, mark)
    own_broker.resume()
    own_broker.create_topic(deployment.topic, PARTITIONS)
    resumed = time.monotonic()
    print(f"\n{len(during)} log line(s) during the {resumed - paused:.1f} s outage:")
    for line in during:
        print("  " + line[:240])

    fresh_clients(deployment, own_broker)
    with ReadyWatch(server) as ready:
        wait_for(lambda: "the topic was recreated or truncated" in server.log_text(), 45,
                 "the executor to report its position beyond the recreated partition's end", interval=0.1)
        print(f"executor's report {time.monotonic() - resumed:.2f} s after the broker came back")
        run_one(deployment, "after", timeout=90)
    print(f"a command after the broker came back answered {time.monotonic() - resumed:.2f} s after it")
    stuck = [d for d in ready.failures if "outgoing queue is stuck" in d]
    print(f"ready meanwhile: {len(ready.failures)} answer(s) 503, {len(stuck)} naming a stuck queue")
    wait_for(lambda: server.get("/ofa/ready").status_code == 200, 60, "ready 200 again", interval=0.2)
    after = log_lines_since(server, mark)[len(during):]
    print(f"{len(after)} log line(s) from the return until ready:")
    for line in after:
        print("  " + line[:240])
    assert len(during) <= 2 * 2, during  # a handful: a line or two per worker
    text = server.log_text()
    print([line[line.find("Kafka producer recreated"):][:120] for line in text.splitlines()
           if "Kafka producer recreated" in line])
    assert "Kafka producer recreated" in text, "the producer the broker forgot was not recreated"


def test_stuck_outgoing_queue_is_reported_then_the_producer_is_recreated(
        own_broker: TansuBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The idempotent producer whose id a restarted broker forgot retries forever, with no error:
    readiness names the stuck queue, a metric counts it, and a new producer delivers the record."""
    monkeypatch.setattr(kafka_transport, "STUCK_REPORT", 1.0)
    monkeypatch.setattr(kafka_transport, "STUCK_AFTER", 3.0)
    own_broker.create_topic("forgotten-ids", 3)
    transport = KafkaTransport(f"kafka://{own_broker.bootstrap}",
                               TransportOptions(topic="forgotten-ids", lock_dir=str(tmp_path)))
    try:
        transport.publish(Record.create("asset-1", "x", 1.0, tag="X", type="Samples"))
        assert transport.flush(10) == 0
        own_broker.pause()
        own_broker.resume()  # empty: topics, groups and producer ids are gone
        own_broker.create_topic("forgotten-ids", 3)
        delivered: list[Exception | None] = []
        transport.publish(Record.create("asset-1", "y", 2.0, tag="Y", type="Samples"), on_delivery=delivered.append)
        health = wait_for(lambda: (h := transport.health()) and "queue is stuck" in h.detail and h, 15,
                          "readiness to name the stuck queue", interval=0.05)
        assert not health.ok
        assert transport.stats()["queue_stuck"] == 1
        wait_for(lambda: delivered, 15, "the record delivered by the new producer", interval=0.05)
        stats = transport.stats()
        print(f"\n{health.detail}\nthen delivered: {delivered}; stats {stats}")
        assert delivered == [None]
        assert stats["stuck"] >= 1 and stats["recreated"] >= 1 and stats["queue_stuck"] == 0
        assert transport.health().ok
    finally:
        transport.close(2.0)


def test_fatal_producer_error_is_followed_by_a_recreated_client_and_successful_writes(
        own_broker: TansuBroker, tmp_path: Path) -> None:
    """A real fatal error: the broker restarts empty and hands this producer's id to another
    producer; the next write is out of sequence (librdkafka: fatal). The client is recreated and
    the record that failed is written by the new one, once."""
    own_broker.create_topic("fatal-ids", 1)
    transport = KafkaTransport(f"kafka://{own_broker.bootstrap}",
                               TransportOptions(topic="fatal-ids", lock_dir=str(tmp_path)))
    try:
        for i in range(5):  # sequence numbers 0..4 on the partition
            transport.publish(Record.create("asset-1", "x", float(i), tag="X", type="Samples"))
        assert transport.flush(10) == 0
        own_broker.pause()
        own_broker.resume()
        own_broker.create_topic("fatal-ids", 1)
        other = CommandSender(own_broker.bootstrap, "fatal-ids", "asset-1", "another-producer")
        other.publish(Record.create("asset-1", "z", 1.0, tag="Z", type="Samples"))  # takes producer id 1 again
        other.flush()
        delivered: list[Exception | None] = []
        transport.publish(Record.create("asset-1", "answer", "after", tag="A", type="Events"),
                          on_delivery=delivered.append)
        wait_for(lambda: delivered, 20, "the write after the fatal error", interval=0.05)
        stats = transport.stats()
        print(f"\ndelivered: {delivered}; stats {stats}")
        assert delivered == [None] and stats["recreated"] == 1
        assert stats["stuck"] == 0 and stats["position_resets"] == 0  # so the fatal error recreated it
        watcher = TopicWatcher(own_broker.bootstrap, "fatal-ids", 1, "asset-1")
        try:
            seen = watcher.wait(lambda s: [r for r in s if r.record.id == "answer"], 15, "the write on the topic")
        finally:
            watcher.close()
        assert len(seen) == 1
        transport.publish(Record.create("asset-1", "x", 9.0, tag="X", type="Samples"))
        assert transport.flush(10) == 0 and transport.stats()["delivery_failures"] == 0
    finally:
        transport.close(2.0)


def test_a_write_after_close_is_refused_and_reopens_no_producer(kafka_broker: TansuBroker, unique_topic: str,
                                                                tmp_path: Path) -> None:
    """A write that took the transport just before its process's stop closed it (a request thread
    racing the worker's exit) once found no producer and opened a new one, never flushed or closed:
    an acknowledged write that nobody delivers, and a poller thread left behind."""
    kafka_broker.create_topic(unique_topic, 1)
    transport = KafkaTransport(f"kafka://{kafka_broker.bootstrap}",
                               TransportOptions(topic=unique_topic, lock_dir=str(tmp_path)))
    transport.publish(Record.create("asset-1", "x", "before", tag="X", type="Events"))
    transport.close(5.0)
    with pytest.raises(TransportError, match="closed its producer; nothing was queued"):
        transport.publish(Record.create("asset-1", "x", "after", tag="X", type="Events"))
    assert transport._producer is None
    marker = CommandSender(kafka_broker.bootstrap, unique_topic, "asset-1", "another-producer")
    marker.publish(Record.create("asset-1", "end", "marker", tag="E", type="Events"))
    marker.flush()
    watcher = TopicWatcher(kafka_broker.bootstrap, unique_topic, 1, "asset-1")
    try:
        seen = watcher.wait(lambda s: list(s) if any(r.record.id == "end" for r in s) else None, 15, "the marker")
    finally:
        watcher.close()
    assert [r.record.value for r in seen if r.record.id == "x"] == ["before"]
