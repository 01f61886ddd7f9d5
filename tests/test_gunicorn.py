"""Issue 2 acceptance: ``gunicorn -w 3 wsgi:app`` with the default (development, sqlite) config.

Real gunicorn processes (harness/gunicorn_server.py): the state one worker
writes is seen by every worker, the CLI's commands are executed by the one
executing worker, and each command exactly once.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from demo import create_app
from harness.gunicorn_server import FLASK, GunicornServer, ServerPool, server_env
from harness.paths import REPO
from harness.sqlite_log import log_records
from harness.sqlite_log import results_of as results_by_cid
from harness.waiting import wait_for

pytestmark = pytest.mark.gunicorn  # see the markers in setup.cfg


def position_x(server: GunicornServer) -> Any:
    attributes = {a["id"]: a["value"] for a in server.get("/ofa/attributes").json()}
    return attributes.get("position_x")


def wait_everywhere(server: GunicornServer, workers: list[int], value: float, timeout: float = 10.0) -> float:
    """Wait until every worker answers ``position_x == value``; return how long that took.

    First until 20 answers in a row agree (requests land on any worker), then
    each worker alone (its siblings paused) so that none is left out.
    """
    started = time.monotonic()
    streak = 0

    def agreed() -> bool:
        nonlocal streak
        streak = streak + 1 if position_x(server) == value else 0
        return streak >= 20

    wait_for(agreed, timeout, f"20 answers in a row with position_x == {value}", interval=0)
    converged = time.monotonic() - started
    for worker in workers:
        with server.only(worker):
            assert server.answering_pid() == worker
            wait_for(lambda: position_x(server) == value, timeout,
                     f"worker {worker} to show position_x == {value}")
    return converged


def test_issue2_acceptance_three_workers_sqlite(servers: ServerPool, tmp_path: Path) -> None:
    db = tmp_path / "openfactory.sqlite3"
    url = f"sqlite:///{db}"  # db is absolute: sqlite:////tmp/...
    asset = f"gunicorn-sqlite-{uuid.uuid4().hex[:10]}"
    env = server_env({"FLASK_CONFIG": "development", "FLASK_OPENFACTORY_TRANSPORT_URL": url, "APP_UUID": asset})
    server = servers.start(env=env, app="wsgi:app", workers=3)
    workers = server.worker_pids()
    assert len(workers) == 3

    # HTTP: one worker runs the method, every worker sees its effect
    answer = server.post("/ofa/methods/move_axis", {"x": 1, "y": 2})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "OK"
    converged = wait_everywhere(server, workers, 1.0)
    print(f"\nposition_x=1.0 after the HTTP call: 20 answers in a row agreed after {converged * 1000:.0f} ms")
    answering = Counter(server.answering_pid() for _ in range(60))
    print(f"answering pids over 60 requests: {dict(answering)}")
    assert set(answering) <= set(workers)
    assert len(answering) >= 2, f"every request went to one worker: {answering}"

    # CLI: sent through the log, executed by the executing worker
    cli = subprocess.run([FLASK, "--app", "wsgi", "ofa", "call", "move_axis", "x=3", "y=4"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert cli.stdout.startswith("OK move_axis"), cli.stdout
    converged = wait_everywhere(server, workers, 3.0)
    print(f"position_x=3.0 after the CLI returned: 20 answers in a row agreed after {converged * 1000:.0f} ms")

    # 200 commands through the CLI's path (runtime.send_command), sent without waiting
    sender_app = create_app("development", {"OPENFACTORY_TRANSPORT_URL": url, "OPENFACTORY_APP_UUID": asset})
    runtime = sender_app.extensions["openfactory"].runtime
    sent: dict[str, float] = {}
    started = time.monotonic()
    try:
        for i in range(200):
            cid, none = runtime.send_command(asset, "move_axis", {"x": 1000 + i, "y": 0})
            assert none is None
            sent[cid] = 1000.0 + i
    finally:
        runtime.stop(timeout=2.0, publish_unavailable=False)
    wait_for(lambda: set(sent) <= results_by_cid(log_records(db, asset), "move_axis").keys(), 60,
             "200 move_axis results", interval=0.05)
    elapsed = time.monotonic() - started
    print(f"200 commands sent and answered in {elapsed:.2f} s")
    assert server.running()
    assert set(server.worker_pids()) == set(workers), "a worker was replaced during the test"
    unavailable = [r for r in log_records(db, asset) if r.id == "avail" and r.value == "UNAVAILABLE"]
    assert unavailable == [], "a worker published avail=UNAVAILABLE while the server runs"

    # stop, so that any late duplicate would be in the log, then count
    assert server.stop() == 0
    records = log_records(db, asset)
    results = results_by_cid(records, "move_axis")
    for cid, x in sent.items():
        assert len(results[cid]) == 1, f"command {cid} answered {len(results[cid])} times"
        assert results[cid][0].status == "OK", results[cid][0]
        assert results[cid][0].result["x"] == x
    # the side effect: each command moved the axis once (position_x records with its x)
    moves = Counter(r.value for r in records if r.id == "position_x" and isinstance(r.value, float)
                    and r.value >= 1000)
    assert sum(moves.values()) == 200, f"{sum(moves.values())} executions for 200 commands"
    assert set(moves.values()) == {1}, [x for x, n in moves.items() if n != 1]
    avail = [r.value for r in records if r.id == "avail"]
    assert avail.count("UNAVAILABLE") == 1 and avail[-1] == "UNAVAILABLE", avail
