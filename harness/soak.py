"""Soak: a steady command and attribute rate under gunicorn; do the workers' resources stay flat?

The repository's app (``harness.apps:ext_app()``: the demo in its production
config) runs under ``gunicorn -w N`` against a Tansu broker. For the whole
run, at steady rates:

* another asset writes ``move_axis_CMD`` records (a plain producer, as the
  gunicorn Kafka tests do); each runs in the executing worker, sets four
  attributes and answers ``move_axis_RESULT``;
* an HTTP client calls ``POST /ofa/methods/move_axis`` (four attribute sets
  and a result, in whichever worker accepts the connection);
* a scraper reads ``/ofa/metrics`` and ``/ofa/attributes`` every few seconds.

Every ``sample_every`` seconds each worker's RSS (``VmRSS``), thread count
(``Threads``) and open file descriptors (``/proc/<pid>/fd``) are sampled.
``trends`` (``harness.soak_report``) compares the first and last third of the samples after a warm-up:
a leak shows as growth, whatever the machine's speed. Used by
``tests/test_soak.py`` (a few minutes) and ``python -m bench --soak``.

Consumers (the app's and the result reader) fetch at most every 200 ms
(``fetch.wait.max.ms`` 200, ``fetch.min.bytes`` 64 KiB): Tansu's cost per
fetch grows with the batches in a partition, and with 10 ms fetches the test
broker saturated both cores after about six minutes and fell behind (a
limit of the test broker; a real Kafka broker indexes offsets).
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from flask_openfactory.transports.kafka.messages import GapGuard
from flask_openfactory.wire.commands import CommandResult, command_record, is_result, new_envelope
from flask_openfactory.wire.protocol import Record, RecordError

from .kafka_settings import KAFKA_CONFIG, KAFKA_LOG, RAW_CONSUMER_CONFIG
from .measured_gunicorn import Gunicorn, ext_env
from .procfs import children_of
from .progress import log
from .scratch import scratch_dir, unique_name
from .soak_report import Sample, SoakResult

__all__ = ["DEDUPE_SIZE", "run_soak"]


def _wait_executing(port: int, timeout: float = 60.0) -> None:
    """Until a worker says it executes commands: the first owner of a fresh command log starts at its end,
    so a command sent before would never run (a worker standing by answers ready before that)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ofa/ready", timeout=5) as response:
                detail = json.load(response)["checks"].get("commands", {}).get("detail", "")
            if detail.startswith("executing"):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError, KeyError):
            pass
        if time.monotonic() >= deadline:
            raise RuntimeError(f"no worker executes commands after {timeout:g} s")
        time.sleep(0.05)

ASSET = "BENCH-SOAK"
CALLER = "BENCH-SOAK-CALLER"
METHOD = "move_axis"
# The executing worker remembers this many answered correlation ids (OPENFACTORY_DEDUPE_SIZE,
# 10,000 by default, ~150 bytes each): small, so that it is full before the warm-up ends and
# its filling is not read as growth (at 15 answers/s the default takes 11 minutes to fill).
DEDUPE_SIZE = 500
SLOW_FETCH = {"fetch.wait.max.ms": 200, "fetch.min.bytes": 65536}  # see the module's docstring
APP_KAFKA_CONFIG = {**KAFKA_CONFIG, **{f"consumer.{k}": v for k, v in SLOW_FETCH.items()}}



def proc_sample(pid: int, at: float) -> Sample:
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return Sample(at, pid, rss / 1024.0, threads, len(os.listdir(f"/proc/{pid}/fd")))


def lock_holders(lock_dir: str) -> set[int]:
    """Pids holding a flock on a file of ``lock_dir`` (the executing worker), from /proc/locks."""
    devices = set()
    for path in Path(lock_dir).glob("executor-*.lock"):
        st = path.stat()
        devices.add(f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}")
    holders = set()
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] in devices:
            holders.add(int(parts[4]))
    return holders



class _Paced(threading.Thread):
    """Calls ``action(i)`` at a steady ``rate`` per second until stopped (no catching up after a stall)."""

    def __init__(self, name: str, rate: float, action: Callable[[int], None], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.rate, self.action, self.stop_event = rate, action, stop

    def run(self) -> None:
        period = 1.0 / self.rate
        next_at = time.monotonic()
        i = 0
        while not self.stop_event.is_set():
            self.action(i)
            i += 1
            next_at = max(next_at + period, time.monotonic() - period)
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))


class _Results(threading.Thread):
    """Reads the asset's partition from the start; keeps the correlation ids answered OK."""

    def __init__(self, bootstrap: str, topic: str, stop: threading.Event) -> None:
        super().__init__(name="soak-results", daemon=True)
        self.stop_event = stop
        self.ok: set[str] = set()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"soak-{uuid.uuid4()}",
                                   **RAW_CONSUMER_CONFIG, **SLOW_FETCH})
        self._consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self._tp = TopicPartition(topic, 0)
        self._next = 0  # the offset expected next
        self._gaps = GapGuard()  # the test broker may serve a batch before an earlier one (a result "lost")
        self.gap_stats = {"gaps_read_again": 0, "gaps_accepted": 0}

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                for message in self._consumer.consume(500, 0.2):
                    if not self._take(message):
                        break  # seeked back: the rest of this batch comes again
        finally:
            self._consumer.close()

    def _take(self, message: Message) -> bool:
        """False when the reader went back for offsets the broker skipped."""
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                self.errors.append(error.str())
            return True
        offset = cast(int, message.offset())
        if self._gaps.read_again(self._consumer, self._tp, self._next, offset, what="the soak's result reader",
                                 stats=self.gap_stats):
            return False
        self._next = max(self._next, offset + 1)
        try:
            record = Record.from_wire(message.key(), message.value())
        except RecordError:
            return True
        if is_result(record) and record.id == METHOD + "_RESULT":
            result = CommandResult.from_record(record)
            if result.status == "OK" and result.correlation_id:
                with self._lock:
                    self.ok.add(result.correlation_id)
        return True

    def answered(self, cids: set[str]) -> int:
        with self._lock:
            return len(cids & self.ok)


def _reread(bootstrap: str, topic: str, missing: set[str]) -> str:
    """Where the commands without an answer are: the whole partition read again, for the report."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"soak-{uuid.uuid4()}", **RAW_CONSUMER_CONFIG})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    found: dict[str, list[str]] = {cid: [] for cid in missing}
    idle = 0
    try:
        while idle < 10:
            messages = consumer.consume(1000, 0.5)
            idle = 0 if messages else idle + 1
            for message in messages:
                value = message.value()
                if message.error() is None and value is not None:
                    for cid in missing:
                        if cid.encode() in value:
                            found[cid].append(f"offset {message.offset()}: {value[:300]!r}")
    finally:
        consumer.close()
    return "\n".join(f"{cid}: {lines or 'not on the topic'}" for cid, lines in list(found.items())[:5])


def run_soak(bootstrap: str, create_topic: Callable[[str, int], object], *, seconds: float, workers: int = 2,
             command_rate: float = 10.0, http_rate: float = 10.0, sample_every: float = 2.0,
             scrape_every: float = 5.0, drain_timeout: float = 60.0, dedupe_size: int = DEDUPE_SIZE) -> SoakResult:
    """Run the load for ``seconds`` and sample every worker; see the module's docstring."""
    topic = unique_name("bench-soak")
    create_topic(topic, 1)
    lock_dir = scratch_dir("soak-locks-")
    env = ext_env(bootstrap, topic, ASSET, lock_dir)
    env["FLASK_OPENFACTORY_KAFKA_CONFIG"] = json.dumps(APP_KAFKA_CONFIG)
    env["FLASK_OPENFACTORY_DEDUPE_SIZE"] = str(dedupe_size)
    server = Gunicorn("harness.apps:ext_app()", env, workers=workers)
    stop = threading.Event()
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 0,
                         "enable.idempotence": True, "logger": KAFKA_LOG})
    done_reading = threading.Event()  # the results reader outlives the load: answers still come in
    results = _Results(bootstrap, topic, done_reading)
    sent: set[str] = set()
    result = SoakResult(seconds, workers, command_rate, http_rate, [], [], None, dedupe_size)
    lock = threading.Lock()

    def send(i: int) -> None:
        envelope = new_envelope(CALLER, {"x": i % 1000, "y": -(i % 1000), "speed": 100})
        record = command_record(ASSET, METHOD, envelope)
        producer.produce(topic, key=record.key, value=record.to_wire(), on_delivery=delivered)
        producer.poll(0)
        with lock:
            sent.add(envelope.correlation_id)

    def sent_so_far() -> set[str]:
        with lock:
            return set(sent)

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            result.kafka_errors.append(error.str())

    def call(i: int) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/ofa/methods/{METHOD}", method="POST",
            data=json.dumps({"x": i % 1000 + 0.5, "y": 0.25}).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status = response.status
                body = json.loads(response.read())
            if body.get("status") != "OK":
                raise RuntimeError(f"answered {body}")
        except urllib.error.HTTPError as exc:
            status = exc.code
        except Exception as exc:  # counted and reported, never raised in the thread
            with lock:
                result.http_errors.append(f"{type(exc).__name__}: {exc}")
            return
        with lock:
            result.http[status] += 1

    def scrape(i: int) -> None:
        for path in ("/ofa/metrics", "/ofa/attributes"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=30) as response:
                    response.read()
                    with lock:
                        result.http[response.status] += 1
            except Exception as exc:
                with lock:
                    result.http_errors.append(f"GET {path}: {type(exc).__name__}: {exc}")
        with lock:
            result.scrapes += 1

    try:
        server.start("/ofa/ready")
        _wait_executing(server.port)
        result.pids_before = list(server.worker_pids)
        results.start()
        threads = [_Paced("soak-commands", command_rate, send, stop), _Paced("soak-http", http_rate, call, stop),
                   _Paced("soak-scrape", 1.0 / scrape_every, scrape, stop)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        next_sample, last_log = started, started
        while (now := time.monotonic()) - started < seconds:
            for pid in result.pids_before:
                result.samples.append(proc_sample(pid, now - started))
            if result.executor is None:
                holders = lock_holders(lock_dir) & set(result.pids_before)
                result.executor = holders.pop() if len(holders) == 1 else None
            if now - last_log >= 60:
                last_log = now
                latest = {s.pid: s for s in result.samples[-len(result.pids_before):]}
                log(f"soak {now - started:.0f}/{seconds:.0f}s: {len(sent_so_far())} commands, "
                    f"{results.answered(sent_so_far())} answered, {sum(result.http.values())} HTTP; " + ", ".join(
                        f"{pid}: {s.rss_mb:.1f} MiB {s.threads} threads {s.fds} fds" for pid, s in latest.items()))
            next_sample += sample_every
            time.sleep(max(0.0, next_sample - time.monotonic()))  # the sampling period
        stop.set()
        for thread in threads:
            thread.join(60)
        producer.flush(30)
        result.commands_sent = len(sent)
        deadline = time.monotonic() + drain_timeout
        while results.answered(sent) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.2)  # the last commands' answers are on their way
        result.commands_ok = results.answered(sent)
        result.kafka_errors += results.errors
        if result.commands_ok < len(sent):
            result.unanswered = (_reread(bootstrap, topic, sent - results.ok)
                                 + f"\ngaps in what the broker served the result reader: {results.gap_stats}"
                                 + "\nserver log:\n" + server.log_tail())
        assert server.proc is not None
        result.pids_after = children_of(server.proc.pid)
    finally:
        stop.set()
        done_reading.set()
        if results.is_alive():
            results.join(10)
        server.close()
    return result
