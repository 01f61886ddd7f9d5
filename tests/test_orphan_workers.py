"""Issue 12 acceptance: ``kill -9`` of the gunicorn master ends its workers' duties at once.

Commands stream into the log while the master is killed; the orphaned
workers must execute nothing later than 1 s after the kill, and the port must
be free for a new server within 2 s.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from flask_openfactory.transports.sqlite import SqliteTransport
from flask_openfactory.wire.commands import command_record, new_envelope
from harness.gunicorn_server import ServerPool, server_env
from harness.procfs import alive
from harness.waiting import wait_for
from probe_apps import PROBE_APP, side_effects

pytestmark = pytest.mark.gunicorn  # see the markers in setup.cfg


class Stream:
    """Writes a ``record`` command every few milliseconds into the sqlite log, from this process."""

    def __init__(self, url: str, asset: str) -> None:
        self.transport = SqliteTransport(url)
        self.asset = asset
        self.sent: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            tag = f"c{len(self.sent)}"
            self.transport.publish(command_record(self.asset, "record", new_envelope("stream", {"tag": tag})))
            self.sent.append(tag)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.transport.close()


def bind_free(port: int) -> bool:
    """What a new server does first: bind the port (gunicorn sets SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
        return True


def test_kill_9_of_the_master_orphans_stop_at_once_and_free_the_port(servers: ServerPool, tmp_path: Path) -> None:
    db = tmp_path / "openfactory.sqlite3"
    effects = tmp_path / "effects.txt"
    asset = f"orphans-{uuid.uuid4().hex[:10]}"
    env = server_env({"FLASK_CONFIG": "development", "FLASK_OPENFACTORY_TRANSPORT_URL": f"sqlite:///{db}",
                      "APP_UUID": asset, "OFA_TEST_SIDE_EFFECTS": str(effects)})
    first = servers.start(env=env, app=PROBE_APP, workers=3)
    orphans = first.worker_pids()
    stream = Stream(f"sqlite:///{db}", asset).start()
    try:
        wait_for(lambda: len(side_effects(effects)) >= 20, 30, "the first 20 executions", interval=0.05)
        killed_at = time.time()
        started = time.monotonic()
        first.signal(signal.SIGKILL)
        wait_for(lambda: bind_free(first.port), 5, f"port {first.port} to be free", interval=0.01)
        freed = time.monotonic() - started
        second = servers.launch(env=env, app=PROBE_APP, workers=3, port=first.port)
        second.wait_ready(60)
        wait_for(lambda: not any(alive(pid) for pid in orphans), 10, "the orphans to exit", interval=0.05)
        gone = time.monotonic() - started
        wait_for(lambda: len(stream.sent) > 0 and any(e.pid in second.worker_pids() for e in side_effects(effects)),
                 30, "the new server to execute commands", interval=0.05)
    finally:
        stream.stop()
    wait_for(lambda: set(stream.sent) <= {e.tag for e in side_effects(effects)}, 60,
             f"all {len(stream.sent)} commands to be executed", interval=0.1)

    found = side_effects(effects)
    late = [e for e in found if e.pid in orphans and e.at > killed_at + 1.0]
    last = max((e.at for e in found if e.pid in orphans), default=killed_at) - killed_at
    print(f"\nport free {freed:.2f} s after kill -9 of the master; orphans gone after {gone:.2f} s; "
          f"last orphan execution {last:+.3f} s after the kill; {len(stream.sent)} commands")
    assert "Connection in use" not in second.log_text()
    assert late == [], late
    assert freed <= 2.0, f"the port stayed taken {freed:.2f} s after the kill"
    executions = Counter(e.tag for e in found)
    assert [t for t, n in executions.items() if n > 1] == []
