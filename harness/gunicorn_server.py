"""A harness that runs the app under real gunicorn processes, as a deployment does.

The multi-process behaviour (one executor among the workers, takeover after a
kill, graceful stop, availability published by the master) only exists with
real forked workers, so the tests start ``gunicorn`` itself and observe it
from outside: HTTP, ``/proc`` (worker pids, who holds the executor lock:
``procfs``), the server log, and what reaches the asset's log (the sqlite
file: ``sqlite_log``, or the topic: ``topic_watch``).

Apps outside the repository root (the tests' probe apps) are found through
``pythonpath``, given per server or once for a ``ServerPool``.

Every wait here is a bounded poll of a condition, never a fixed sleep; every
process is signalled by the pid this harness started or found as a child.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from .paths import REPO
from .procfs import alive, children_of, free_port, is_gunicorn
from .waiting import wait_for

__all__ = ["BIN", "FLASK", "GUNICORN", "GunicornServer", "ServerPool", "server_env"]

BIN = Path(sys.executable).parent  # the venv that runs pytest has gunicorn and flask


def _script(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


GUNICORN = _script("gunicorn")
FLASK = _script("flask")

# Environment that would change what the server under test does; each test sets its own.
_DROPPED_PREFIXES = ("FLASK_", "OPENFACTORY_", "GUNICORN", "SWARM_", "OFA_TEST_")
_DROPPED = {"APP_UUID", "KAFKA_BROKER", "SECRET_KEY", "KSQLDB_URL", "WEB_CONCURRENCY", "PORT",
            "APPLICATION_VERSION", "APPLICATION_MANUFACTURER", "APPLICATION_LICENSE"}


def server_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without anything that configures the app or gunicorn, plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if k not in _DROPPED and not k.startswith(_DROPPED_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


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
        pythonpath: str | Path | None = None,
    ) -> None:
        self.log_path = log_path
        self.env = dict(env)
        self.app = app
        self.workers = workers
        self.graceful_timeout = graceful_timeout
        self.extra_args = list(extra_args)
        self.pythonpath = pythonpath  # gunicorn's --pythonpath: where an app outside the repository is found
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
            *(["--pythonpath", str(self.pythonpath)] if self.pythonpath is not None else []),
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

    def metric(self, name: str, default: float | None = None) -> float:
        """One sample of the answering worker's ``/ofa/metrics``, by name with its labels
        (``openfactory_runtime_events_total{event="follow_errors"}``); ``default`` when absent,
        else an error showing the page."""
        text = self.get("/ofa/metrics").text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        if default is not None:
            return default
        raise AssertionError(f"{name} not in /ofa/metrics:\n{text}")

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


# -- fixtures' helper ----------------------------------------------------------------------


class ServerPool:
    """The servers one test started: all stopped at teardown, their logs printed.

    pytest shows a test's captured teardown output only when the test failed,
    so the log tails appear exactly when they are needed.
    """

    def __init__(self, directory: Path, **defaults: Any) -> None:
        self.directory = directory
        self.defaults = defaults  # options of every server started here (e.g. ``pythonpath``)
        self.servers: list[GunicornServer] = []

    def start(self, *, env: Mapping[str, str], ready_timeout: float = 60.0, executing: bool = True,
              **options: Any) -> GunicornServer:
        log_path = self.directory / f"gunicorn-{len(self.servers) + 1}.log"
        server = GunicornServer(log_path=log_path, env=env, **{**self.defaults, **options})
        self.servers.append(server)
        return server.start(ready_timeout, executing=executing)

    def launch(self, *, env: Mapping[str, str], port: int | None = None, **options: Any) -> GunicornServer:
        """A server started without waiting for readiness (see ``GunicornServer.launch``)."""
        log_path = self.directory / f"gunicorn-{len(self.servers) + 1}.log"
        server = GunicornServer(log_path=log_path, env=env, **{**self.defaults, **options})
        self.servers.append(server)
        return server.launch(port)

    def close(self) -> None:
        for server in self.servers:
            try:
                server.stop()
            finally:
                print(f"\n----- gunicorn log {server.log_path} (last 200 lines) -----\n{server.log_tail(200)}")
