"""gunicorn under measurement: the app's environment, frozen and thawed servers, their CPU.

The benchmarks and the soak serve the apps the same way: ``python -m gunicorn``
with the shipped config module (``-c python:flask_openfactory.gunicorn_conf``)
from the repository root, every process signalled by the pid started. A
``Server`` can be frozen (SIGSTOP) while another one is measured, so its
background threads take no CPU from it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .kafka_settings import KAFKA_CONFIG
from .paths import REPO as ROOT
from .procfs import children_of, free_port, rss_mb
from .progress import log
from .scratch import scratch_dir

__all__ = ["CALL_WAIT", "Gunicorn", "Server", "ext_env", "shipped_gunicorn"]


CALL_WAIT = 5.0  # seconds an HTTP method call waits for its result (answers take milliseconds here)


def ext_env(bootstrap: str, topic: str, asset_uuid: str, lock_dir: str) -> dict[str, str]:
    """The platform's environment for the production config, plus FLASK_OPENFACTORY_* overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "OPENFACTORY_"))}
    env.update({
        "KAFKA_BROKER": bootstrap,
        "APP_UUID": asset_uuid,
        "SECRET_KEY": "bench-only-secret",
        "FLASK_OPENFACTORY_ASSETS_TOPIC": topic,
        "FLASK_OPENFACTORY_KAFKA_CONFIG": json.dumps(KAFKA_CONFIG),
        "FLASK_OPENFACTORY_LOCK_DIR": lock_dir,
        "FLASK_OPENFACTORY_CALL_WAIT": str(CALL_WAIT),
        "PYTHONPATH": str(ROOT),
    })
    return env


def shipped_gunicorn() -> str:
    """What the shipped config module (every gunicorn here loads it) sets for serving."""
    from flask_openfactory import gunicorn_conf as conf

    return f"shipped config: {conf.worker_class} workers, {conf.threads} threads, keep-alive {conf.keepalive}s"


class _BindFailed(RuntimeError):
    """gunicorn could not bind the port it was given."""


class Server:
    """Processes serving one port, frozen and thawed together, their CPU read from /proc."""

    port = 0
    paused = False

    def _pids(self) -> list[int]:
        raise NotImplementedError

    def pause(self) -> None:
        """Freeze every process (sockets stay open; nothing runs)."""
        for pid in self._pids():
            os.kill(pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        for pid in self._pids():
            os.kill(pid, signal.SIGCONT)
        self.paused = False

    def worker_processes(self) -> list[int]:
        """The processes that share the listening socket (none for a single-process server)."""
        return []

    def cpu_by_process(self) -> dict[int, float]:
        """CPU used so far (utime + stime, seconds) by each process."""
        used: dict[int, float] = {}
        for pid in self._pids():
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return used

    def cpu_seconds(self) -> float:
        """CPU used so far by every process (utime + stime)."""
        return sum(self.cpu_by_process().values())



class Gunicorn(Server):
    """One gunicorn master on a free loopback port."""

    def __init__(self, app_spec: str, env: dict[str, str], *, workers: int = 2,
                 options: tuple[str, ...] = ()) -> None:
        self.app_spec = app_spec
        self.env = env
        self.workers = workers
        self.options = options  # more gunicorn options (worker class, threads, keep-alive)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.worker_pids: list[int] = []
        self.paused = False
        self.log_path = Path(scratch_dir("gunicorn-")) / "error.log"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn",
            "-w", str(self.workers),
            "-b", f"127.0.0.1:{self.port}",
            "--no-control-socket",
            "-c", "python:flask_openfactory.gunicorn_conf",
            "--chdir", str(ROOT),
            "--error-logfile", str(self.log_path),
            "--log-level", "warning",
            *self.options,
            self.app_spec,
        ]

    def start(self, ready_path: str, timeout: float = 60.0) -> Gunicorn:
        """Start and wait until ``ready_path`` answers 200 and every worker is up.

        A port found free can be taken before gunicorn binds it (by a client's
        ephemeral port under load): then try another one.
        """
        for _ in range(3):
            try:
                return self._start(ready_path, timeout)
            except _BindFailed:
                log(f"gunicorn {self.app_spec}: port {self.port} was taken; retrying")
        raise RuntimeError(f"gunicorn {self.app_spec}: no free port after 3 attempts")

    def _start(self, ready_path: str, timeout: float) -> Gunicorn:
        self.port = free_port()
        self.log_path.write_text("")
        self.proc = subprocess.Popen(self.command(), env=self.env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                self.proc = None
                if "Address already in use" in tail or "Connection in use" in tail:
                    raise _BindFailed(tail)
                raise RuntimeError(f"gunicorn {self.app_spec} exited: {tail}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{ready_path}", timeout=5) as r:
                    if r.status == 200 and len(children_of(self.proc.pid)) >= self.workers:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gunicorn {self.app_spec} not ready in {timeout:g}s: {self.log_tail()}")
            time.sleep(0.1)
        self.worker_pids = children_of(self.proc.pid)
        log(f"gunicorn {self.app_spec}: master {self.proc.pid}, workers {self.worker_pids}, port {self.port}")
        return self

    def _pids(self) -> list[int]:
        return ([self.proc.pid] if self.proc is not None else []) + self.worker_pids

    def worker_processes(self) -> list[int]:
        return list(self.worker_pids)

    def worker_rss_mb(self) -> float:
        """The largest worker (the one executing commands holds an extra consumer)."""
        return max(rss_mb(pid) for pid in self.worker_pids)

    def log_tail(self, limit: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the master (graceful, runs the hooks); SIGKILL by pid if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if self.paused:
            for pid in [proc.pid, *self.worker_pids]:
                try:
                    os.kill(pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
                except ProcessLookupError:
                    pass
            self.paused = False
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for pid in self.worker_pids:
            try:
                os.kill(pid, signal.SIGKILL)  # only if a worker outlived its master
            except ProcessLookupError:
                pass
        log(f"gunicorn {self.app_spec}: master {proc.pid} stopped")

    def close(self) -> None:
        """Stop, then remove the log file."""
        self.stop()
        try:
            self.log_path.unlink()
        except OSError:
            pass
