"""Issue 12 acceptance, sqlite: when the log file itself fails under ``gunicorn -w 3``.

The file is deleted, corrupted or its folder made read-only while real
gunicorn workers serve; each fault must be named (ready 503, metrics, CLI),
nothing acknowledged into it, and the deployment must heal by itself once the
fault is gone, without an HTTP request.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import time
import uuid
from contextlib import closing
from pathlib import Path

import pytest
import requests

from flask_openfactory.transports.sqlite import SqliteTransport
from flask_openfactory.wire.commands import command_record, new_envelope
from harness.gunicorn_server import FLASK, GunicornServer, ServerPool, server_env
from harness.paths import REPO
from harness.procfs import flock_holders
from harness.waiting import wait_for
from test_gunicorn import log_records, results_by_cid

pytestmark = pytest.mark.gunicorn  # see the markers in setup.cfg


def sqlite_env(db: Path, asset: str) -> dict[str, str]:
    return server_env({"FLASK_CONFIG": "development", "FLASK_OPENFACTORY_TRANSPORT_URL": f"sqlite:///{db}",
                       "APP_UUID": asset})


def json_answer(response: requests.Response) -> dict:
    """Every answer under a fault is JSON with a message a person can act on, never a 500."""
    assert response.status_code != 500, response.text
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.text[:300]
    return response.json()


def ready_fault(server: GunicornServer) -> str | None:
    """The transport check's detail when ready answers 503, else None."""
    answer = server.get("/ofa/ready")
    body = json_answer(answer)
    if answer.status_code != 503:
        return None
    return str(body["checks"].get("transport", {}).get("detail") or body["checks"])


def each_worker_says(server: GunicornServer, workers: list[int], words: str, deadline: float) -> dict[int, str]:
    """Every worker, pinned in turn, answers ready 503 with ``words`` in its transport check."""
    seen = {}
    for worker in workers:
        with server.only(worker):
            def named(worker: int = worker) -> str | None:
                assert server.answering_pid() == worker
                detail = ready_fault(server)
                return detail if detail is not None and words in detail else None

            seen[worker] = wait_for(named, max(0.1, deadline - time.monotonic()),
                                    f"worker {worker} to answer ready 503 naming {words!r}")
    return seen


def call(server: GunicornServer, x: float) -> requests.Response:
    return server.post("/ofa/methods/move_axis", {"x": x, "y": 0}, timeout=30)


def backup(db: Path, target: Path) -> None:
    with closing(sqlite3.connect(db)) as source, closing(sqlite3.connect(target)) as copy:
        source.backup(copy)


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLASK, "--app", "wsgi", "ofa", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


def test_deleted_file_is_named_everywhere_nothing_acknowledged_and_put_back_heals(
        servers: ServerPool, tmp_path: Path) -> None:
    db = tmp_path / "instance" / "openfactory.sqlite3"
    asset = f"faults-{uuid.uuid4().hex[:10]}"
    env = sqlite_env(db, asset)
    server = servers.start(env=env, workers=3)
    workers = server.worker_pids()
    assert call(server, 1).status_code == 200
    backup(db, tmp_path / "good-copy.sqlite3")

    os.unlink(db)
    deleted_at = time.monotonic()
    details = each_worker_says(server, workers, "was deleted", deleted_at + 10)
    print(f"\nall 3 workers answered ready 503 naming the deletion {time.monotonic() - deleted_at:.2f} s after it")
    assert all(str(db) in d for d in details.values()), details

    statuses = []
    for worker in workers:
        with server.only(worker):
            for i in range(3):
                answer = call(server, 100 + i)
                statuses.append(answer.status_code)
                assert answer.status_code == 503, answer.text  # never 200: it would be in no log
                assert "deleted" in json_answer(answer)["message"], answer.text
            metrics = server.get("/ofa/metrics").text
            assert 'openfactory_transport_fault{kind="deleted"} 1.0' in metrics, metrics[-2000:]
    print(f"calls during the fault: {statuses}")

    # the CLI says what it found and never makes a new empty log beside the lost one
    status = run_cli(env, "status")
    assert status.returncode == 1 and "was deleted" in status.stdout + status.stderr, status.stdout + status.stderr
    called = run_cli(env, "call", "move_axis", "x=5", "y=6", "--timeout", "3")
    assert called.returncode == 5 and "was deleted" in called.stderr, called.stdout + called.stderr
    assert not db.exists(), "the CLI (or a worker) created a new database in place of the deleted one"
    print(f"CLI status exit {status.returncode}, call exit {called.returncode}: {called.stderr.strip()[:160]}")

    shutil.copy(tmp_path / "good-copy.sqlite3", db)
    restored_at = time.monotonic()
    for worker in workers:  # each worker healed on its own (ready again); calls go through the executor
        with server.only(worker):
            wait_for(lambda: server.get("/ofa/ready").status_code == 200, 10, f"worker {worker} to be ready again")
    for _ in workers:
        wait_for(lambda: call(server, 7).status_code == 200, 10, "a call to be taken again")
    print(f"every worker took calls again {time.monotonic() - restored_at:.2f} s after the file was put back")
    assert set(server.worker_pids()) == set(workers), "a worker was restarted"
    moves = [r.value for r in log_records(db, asset) if r.id == "position_x"]
    assert moves.count(7.0) == 3 and not any(100 <= m < 103 for m in moves), moves


def test_a_copy_put_back_slowly_heals_and_a_worker_away_meanwhile_misses_nothing(
        servers: ServerPool, tmp_path: Path) -> None:
    """A copy written in pieces (empty, then half, then whole) is opened only once whole
    (SQLite would delete the -wal beside an empty file). A worker frozen (SIGSTOP) while its
    follower was down thaws after calls were made: its follower goes on where it stopped,
    so its state has every move, not only those written after it came back."""
    db = tmp_path / "instance" / "openfactory.sqlite3"
    asset = f"faults-{uuid.uuid4().hex[:10]}"
    server = servers.start(env=sqlite_env(db, asset), workers=3)
    workers = server.worker_pids()
    assert call(server, 1).status_code == 200
    lock = SqliteTransport(f"sqlite:///{db}").lock_path(asset, f"ofa-app-{asset}")
    backup(db, tmp_path / "good-copy.sqlite3")
    content = (tmp_path / "good-copy.sqlite3").read_bytes()
    os.unlink(db)
    each_worker_says(server, workers, "was deleted", time.monotonic() + 10)
    with open(db, "wb") as copying:
        copying.flush()
        each_worker_says(server, workers, "not a whole SQLite database (0 bytes", time.monotonic() + 10)
        copying.write(content[: len(content) // 2 + 100])
        copying.flush()
        each_worker_says(server, workers, "not a whole SQLite database", time.monotonic() + 10)
        assert Path(f"{db}-wal").exists(), "the -wal beside the log was deleted while the copy was written"

        away = workers[-1]  # frozen from before the copy is whole until after the calls
        with server.only(away):
            wait_for(lambda: server.metric('openfactory_runtime_events_total{event="follow_errors"}', 0) >= 1,
                     10, f"worker {away}'s follower to fail")
        wait_for(lambda: away not in flock_holders(lock), 10, f"worker {away} to hand the command log over")
        os.kill(away, signal.SIGSTOP)
        copying.write(content[len(content) // 2 + 100:])
    try:
        # a worker that has not looked at the file again answers 503 (nothing written)
        answers: list[requests.Response] = []
        deadline = time.monotonic() + 15
        while sum(a.status_code == 200 for a in answers) < 6:
            assert time.monotonic() < deadline, [(a.status_code, a.text[:200]) for a in answers]
            answer = call(server, 10 + sum(a.status_code == 200 for a in answers))
            assert answer.status_code in (200, 503), answer.text[:400]
            answers.append(answer)
    finally:
        os.kill(away, signal.SIGCONT)

    for worker in workers:  # each worker's state has every move, also the one away meanwhile
        with server.only(worker):
            shown = server.get("/ofa/attributes/position_x")
            assert shown.status_code == 200 and shown.json()["value"] == 15, (worker, shown.text)
    assert call(server, 16).status_code == 200
    moves = [r.value for r in log_records(db, asset) if r.id == "position_x"]
    assert moves[-7:] == [10.0 + i for i in range(7)], moves


def corrupt_middle(db: Path, size: int = 64 * 1024) -> None:
    length = db.stat().st_size
    with open(db, "r+b") as f:
        f.seek(length // 2 - size // 2)
        f.write(os.urandom(size))


def test_corrupt_file_at_start_refuses_writes_and_says_so(servers: ServerPool, tmp_path: Path) -> None:
    db = tmp_path / "openfactory.sqlite3"
    asset = f"corrupt-{uuid.uuid4().hex[:10]}"
    writer = SqliteTransport(f"sqlite:///{db}")
    for i in range(3000):  # a log of some 1 MB, so that garbage in the middle hits table pages
        writer.publish(command_record(asset, "move_axis", new_envelope("filler", {"x": i, "y": "y" * 200})))
    writer.close()
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    backup(db, tmp_path / "good-copy.sqlite3")
    corrupt_middle(db)
    fingerprint = hashlib.sha256(db.read_bytes()).hexdigest()

    server = servers.launch(env=sqlite_env(db, asset), workers=2)
    workers = server.wait_answering(60)
    details = each_worker_says(server, workers, "corrupt", time.monotonic() + 10)
    assert all("quick_check" in d for d in details.values()), details
    answer = call(server, 1)
    assert answer.status_code == 503 and "corrupt" in json_answer(answer)["message"], answer.text
    wait_for(lambda: "is corrupt" in server.log_text(), 10, "the server log to say the file is corrupt")
    assert hashlib.sha256(db.read_bytes()).hexdigest() == fingerprint, "something was written into the file"
    print(f"\nready: {next(iter(details.values()))[:200]}\ncall: {answer.status_code} {answer.json()['message'][:120]}")

    shutil.copy(tmp_path / "good-copy.sqlite3", db)  # a good copy put back heals the running server
    restored_at = time.monotonic()
    for worker in workers:  # each worker healed on its own (ready again); calls go through the executor
        with server.only(worker):
            wait_for(lambda: server.get("/ofa/ready").status_code == 200, 10, f"worker {worker} to be ready again")
    assert call(server, 3).status_code == 200
    print(f"every worker took calls again {time.monotonic() - restored_at:.2f} s after a good copy was put back")


def _freeze(paths: list[Path]) -> None:
    """Read-only as production sees it; root ignores permission bits, so root makes them immutable."""
    for path in paths:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "+i", str(path)], check=True)
        else:
            path.chmod(path.stat().st_mode & ~0o222)


def _thaw(paths: list[Path]) -> None:
    for path in reversed(paths):
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=False)
        else:
            path.chmod(path.stat().st_mode | 0o200)


def test_read_only_folder_never_500_and_execution_resumes_unasked(servers: ServerPool, tmp_path: Path) -> None:
    folder = tmp_path / "instance"
    db = folder / "openfactory.sqlite3"
    asset = f"readonly-{uuid.uuid4().hex[:10]}"
    server = servers.start(env=sqlite_env(db, asset), workers=3)
    assert call(server, 1).status_code == 200
    lock = SqliteTransport(f"sqlite:///{db}").lock_path(asset, f"ofa-app-{asset}")
    executor = wait_for(lambda: flock_holders(lock), 10, "the executor's lock")[0]

    frozen = sorted(folder.iterdir()) + [folder]
    _freeze(frozen)
    try:
        os.kill(executor, signal.SIGKILL)  # the standbys must fail to take a read-only log, and say so
        statuses: list[int] = []
        workers = server.wait_answering(30)
        for worker in workers:
            with server.only(worker):
                wait_for(lambda: ready_fault(server) is not None and "not writable" in ready_fault(server), 10,
                         f"worker {worker} to answer ready 503 naming the read-only folder")
                for path in ("/ofa/ready", "/ofa/attributes", "/ofa/attributes/position_x", "/ofa/metrics"):
                    statuses.append(server.get(path).status_code)
                answer = call(server, 2)
                statuses.append(answer.status_code)
                assert answer.status_code == 503 and "not writable" in json_answer(answer)["message"], answer.text
        assert 500 not in statuses, statuses
        print(f"\nstatuses while read-only: {sorted(set(statuses))} over {len(statuses)} requests")
    finally:
        _thaw(frozen)
    fixed_at = time.monotonic()

    # no HTTP request from here on: a command written straight into the log must run within 5 s
    sender = SqliteTransport(f"sqlite:///{db}")
    envelope = new_envelope("test-sender", {"x": 42, "y": 0})
    sender.publish(command_record(asset, "move_axis", envelope))
    sender.close()
    wait_for(lambda: envelope.correlation_id in results_by_cid(log_records(db, asset), "move_axis"), 5,
             "the command written after the fix to be executed", interval=0.05)
    print(f"command answered {time.monotonic() - fixed_at:.2f} s after the folder was writable again")
    result = results_by_cid(log_records(db, asset), "move_axis")[envelope.correlation_id]
    assert [r.status for r in result] == ["OK"], result
