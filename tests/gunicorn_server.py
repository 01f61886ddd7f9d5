"""A harness that runs the app under real gunicorn processes, as a deployment does.

The multi-process behaviour (one executor among the workers, takeover after a
kill, graceful stop, availability published by the master) only exists with
real forked workers, so these tests start ``gunicorn`` itself and observe it
from outside: HTTP, ``/proc`` (worker pids, who holds the executor lock), the
server log, and what reaches the asset's log (the sqlite file or the topic).

Every wait here is a bounded poll of a condition, never a fixed sleep; every
process is signalled by the pid this harness started or found as a child.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import requests
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from flask_openfactory.commands import CommandResult, command_record, is_result, new_envelope
from flask_openfactory.protocol import Record, RecordError
from waiting import wait_for  # also re-exported to the gunicorn tests

T = TypeVar("T")
_client_log = logging.getLogger("gunicorn_server.kafka")  # librdkafka's lines, captured by pytest

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
BIN = Path(sys.executable).parent  # the venv that runs pytest has gunicorn and flask


def _script(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


GUNICORN = _script("gunicorn")
FLASK = _script("flask")
PROBE_APP = "gunicorn_app:create_app()"  # tests/gunicorn_app.py, loaded with --pythonpath tests

# Environment that would change what the server under test does; each test sets its own.
_DROPPED_PREFIXES = ("FLASK_", "OPENFACTORY_", "GUNICORN", "SWARM_", "OFA_TEST_")
_DROPPED = {"APP_UUID", "KAFKA_BROKER", "SECRET_KEY", "KSQLDB_URL", "WEB_CONCURRENCY", "PORT",
            "APPLICATION_VERSION", "APPLICATION_MANUFACTURER", "APPLICATION_LICENSE"}




def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without anything that configures the app or gunicorn, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in _DROPPED and not k.startswith(_DROPPED_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


# -- /proc ------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name is in parentheses and may contain spaces: split after the last ')'
    return text[text.rfind(")") + 2:].split()


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (scans /proc: no psutil here), zombies excluded."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields and fields[1] == str(pid) and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


def alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def is_gunicorn(pid: int) -> bool:
    try:
        return b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def flock_holders(path: str | Path) -> list[int]:
    """Pids holding a ``flock`` on ``path``, read from /proc/locks."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return []
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = []
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 28706 fe:00:2156497 0 EOF"; blocked waiters are marked "->"
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == device:
            holders.append(int(parts[4]))
    return holders


# -- the server -------------------------------------------------------------------------


class GunicornServer:
    """One gunicorn master and its workers on a free loopback port, log captured to a file."""

    def __init__(
        self,
        *,
        log_path: Path,
        env: Mapping[str, str],
        app: str = "wsgi:app",
        workers: int = 3,
        graceful_timeout: float = 10.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.log_path = log_path
        self.env = dict(env)
        self.app = app
        self.workers = workers
        self.graceful_timeout = graceful_timeout
        self.extra_args = list(extra_args)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._seen_workers: set[int] = set()
        self._stopped_workers: set[int] = set()

    # lifecycle

    def start(self, ready_timeout: float = 60.0, *, executing: bool = True) -> GunicornServer:
        """Start and wait until every worker runs the asset (and one executes commands)."""
        for attempt in range(3):  # a port found free may be taken before gunicorn binds it
            self.port = free_port()
            self._launch()
            try:
                self.wait_ready(ready_timeout, executing=executing)
                return self
            except _MasterExited:
                if "in use" not in self.log_text() or attempt == 2:
                    raise
        return self

    def launch(self, port: int | None = None) -> GunicornServer:
        """Start without waiting for readiness: a server a test expects not to become ready,
        or one that must bind a given port (``port``) at once."""
        self.port = port or free_port()
        self._launch()
        return self

    def wait_answering(self, timeout: float = 60.0) -> list[int]:
        """Every worker answers ``/ofa/health`` (ready or not); their pids."""
        answered: set[int] = set()

        def all_answered() -> list[int] | None:
            self._check_master()
            workers = set(self.worker_pids())
            if len(workers) == self.workers and workers <= answered:
                return sorted(workers)
            try:
                answered.add(self.answering_pid(timeout=5))
            except (requests.RequestException, ValueError, KeyError):
                pass
            return None

        return wait_for(all_answered, timeout, f"every worker of {self.url} to answer /ofa/health")

    def _launch(self) -> None:
        command = [
            GUNICORN,
            "--no-control-socket",
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(self.workers),
            "--graceful-timeout", f"{self.graceful_timeout:g}",
            "--pythonpath", str(TESTS),
            *self.extra_args,
            self.app,
        ]
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(command, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        assert self.proc is not None, "server not started"
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _check_master(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise _MasterExited(
                f"gunicorn exited with status {self.proc.returncode}; log {self.log_path}:\n{self.log_tail()}")

    def wait_ready(self, timeout: float = 60.0, *, executing: bool = True) -> None:
        """Every worker answers HTTP; with ``executing``, one says it executes commands.

        ``post_worker_init`` starts each worker's runtime in the background (a
        worker serves its health probe at once); with ``executing``, readiness
        says that one of them executes commands.
        """
        deadline = time.monotonic() + timeout
        answered: set[int] = set()
        body: Any = None
        while True:
            self._check_master()
            workers = set(self.worker_pids())
            try:
                if len(workers) == self.workers and not workers <= answered:
                    answered.add(self.answering_pid(timeout=5))
                elif len(workers) == self.workers:
                    answer = requests.get(self.url + "/ofa/ready", timeout=5)
                    body = answer.json()
                    detail = str(body.get("checks", {}).get("commands", {}).get("detail", ""))
                    if answer.status_code == 200 and (not executing or detail.startswith("executing")):
                        return
            except (requests.RequestException, ValueError, KeyError) as exc:
                body = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"server not ready within {timeout:g} s: workers {sorted(workers)}, answered "
                    f"{sorted(answered)}, last readiness {body}; log {self.log_path}:\n{self.log_tail()}")
            time.sleep(0.01)

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float) -> int | None:
        """The master's exit status, or None if it still runs after ``timeout``."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM (graceful), SIGKILL after ``timeout``; leaves no worker behind."""
        if self.proc is None:
            return None
        for pid in list(self._stopped_workers):
            self._signal_worker(pid, signal.SIGCONT)
        self._stopped_workers.clear()
        if self.proc.poll() is None:
            self._seen_workers.update(self.worker_pids())
            self.proc.send_signal(signal.SIGTERM)
            if self.wait_exit(self.graceful_timeout + 10 if timeout is None else timeout) is None:
                self.proc.kill()
                self.proc.wait(10)
        for pid in self._seen_workers:  # a killed master leaves orphans; only ours, still gunicorn
            if alive(pid) and is_gunicorn(pid):
                self._signal_worker(pid, signal.SIGKILL)
        return self.proc.returncode

    # observation

    def worker_pids(self) -> list[int]:
        pids = children_of(self.pid) if self.running() else []
        self._seen_workers.update(pids)
        return pids

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def get(self, path: str, timeout: float = 10.0) -> requests.Response:
        return requests.get(self.url + path, timeout=timeout)

    def post(self, path: str, body: Any, timeout: float = 10.0) -> requests.Response:
        return requests.post(self.url + path, json=body, timeout=timeout)

    def answering_pid(self, timeout: float = 10.0) -> int:
        return int(self.get("/ofa/health", timeout=timeout).json()["pid"])

    @contextmanager
    def only(self, worker: int) -> Iterator[None]:
        """Let only ``worker`` accept connections: SIGSTOP its siblings for the duration.

        The listening socket is shared, so a stopped worker cannot take a
        connection; this pins a request to one worker without any product hook.
        """
        others = [pid for pid in self.worker_pids() if pid != worker]
        try:
            for pid in others:
                self._signal_worker(pid, signal.SIGSTOP)
                self._stopped_workers.add(pid)
            yield
        finally:
            for pid in others:
                self._signal_worker(pid, signal.SIGCONT)
                self._stopped_workers.discard(pid)

    def _signal_worker(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class _MasterExited(AssertionError):
    """gunicorn's master ended before the server became ready."""


# -- HTTP load --------------------------------------------------------------------------


class HttpLoad:
    """Threads that GET ``paths`` in turn until stopped or ``max_requests`` each."""

    def __init__(self, base_url: str, paths: Sequence[str], *, threads: int = 3,
                 max_requests: int = 2000, timeout: float = 30.0) -> None:
        self.base_url = base_url
        self.paths = list(paths)
        self.max_requests = max_requests
        self.timeout = timeout
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"http-load-{i}", daemon=True)
                         for i in range(threads)]

    @property
    def count(self) -> int:
        with self._lock:
            return sum(self.statuses.values()) + len(self.errors)

    def start(self) -> HttpLoad:
        for thread in self._threads:
            thread.start()
        return self

    def _run(self) -> None:
        for i in range(self.max_requests):
            if self._stop.is_set():
                return
            path = self.paths[i % len(self.paths)]
            try:
                status = requests.get(self.base_url + path, timeout=self.timeout).status_code
            except Exception as exc:  # counted and reported by the test, never raised in the thread
                with self._lock:
                    self.errors.append(f"GET {path}: {type(exc).__name__}: {exc}")
                continue
            with self._lock:
                self.statuses[status] += 1

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                raise AssertionError(f"HTTP load thread {thread.name} did not end within {timeout:g} s")


# -- side effects of the probe methods ------------------------------------------------


@dataclass(frozen=True)
class SideEffect:
    event: str
    tag: str
    pid: int
    at: float


def side_effects(path: Path) -> list[SideEffect]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        event, tag, pid, at = line.split()
        found.append(SideEffect(event, tag, int(pid), float(at)))
    return found


def executions(path: Path) -> Counter[str]:
    """Completed executions per tag."""
    return Counter(e.tag for e in side_effects(path) if e.event == "done")


# -- Kafka: a caller asset and a reader of the whole topic -----------------------------


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
    sees everything that was written, in partition order.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int, asset_uuid: str) -> None:
        self.asset_uuid = asset_uuid
        self._key = asset_uuid.encode("utf-8")
        self._cond = threading.Condition()
        self._seen: list[Seen] = []
        self._errors: list[str] = []
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
                for message in messages:
                    if message.error() is not None or message.key() != self._key:
                        continue
                    try:
                        record = Record.from_wire(message.key(), message.value())
                    except RecordError:
                        continue
                    batch.append(Seen(now, message.partition(), message.offset(), record))
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
                                         f"{len(self._seen)} records seen; errors: {self._errors[:3]}")
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


# -- sqlite: the asset's log read straight from the database file -----------------------


def log_records(db: Path, asset_uuid: str) -> list[Record]:
    """The asset's log, in order."""
    with closing(sqlite3.connect(db, timeout=10)) as conn:
        rows = conn.execute("SELECT key, value FROM log WHERE key = ? ORDER BY offset", (asset_uuid,)).fetchall()
    return [Record.from_wire(key, value) for key, value in rows]


def results_of(records: Iterable[Record], method: str) -> dict[str, list[CommandResult]]:
    """Results of ``method`` per correlation id, in log order."""
    found: dict[str, list[CommandResult]] = {}
    for record in records:
        if is_result(record) and record.id == f"{method}_RESULT":
            result = CommandResult.from_record(record)
            found.setdefault(str(result.correlation_id), []).append(result)
    return found


# -- fixtures' helper ----------------------------------------------------------------------


class ServerPool:
    """The servers one test started: all stopped at teardown, their logs printed.

    pytest shows a test's captured teardown output only when the test failed,
    so the log tails appear exactly when they are needed.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.servers: list[GunicornServer] = []

    def start(self, *, env: Mapping[str, str], ready_timeout: float = 60.0, executing: bool = True,
              **options: Any) -> GunicornServer:
        log_path = self.directory / f"gunicorn-{len(self.servers) + 1}.log"
        server = GunicornServer(log_path=log_path, env=env, **options)
        self.servers.append(server)
        return server.start(ready_timeout, executing=executing)

    def launch(self, *, env: Mapping[str, str], port: int | None = None, **options: Any) -> GunicornServer:
        """A server started without waiting for readiness (see ``GunicornServer.launch``)."""
        log_path = self.directory / f"gunicorn-{len(self.servers) + 1}.log"
        server = GunicornServer(log_path=log_path, env=env, **options)
        self.servers.append(server)
        return server.launch(port)

    def close(self) -> None:
        for server in self.servers:
            try:
                server.stop()
            finally:
                print(f"\n----- gunicorn log {server.log_path} (last 200 lines) -----\n{server.log_tail(200)}")
