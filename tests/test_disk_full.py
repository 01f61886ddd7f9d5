"""Issue 12, disk full: a method that ran while the log's disk filled says so, and never runs twice.

The sqlite log lives on a small tmpfs of its own under ``gunicorn -w 2``. A
call starts, the disk fills while the method runs, and the method's result
cannot be written. The answer must say that the method ran (never "nothing
was published", which invites a retry that moves the machine again); once
space returns the ``_RESULT`` must reach the log without any request, and a
retry with the same correlation id must get that result without a second run.
"""

from __future__ import annotations

import errno
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import requests

from flask_openfactory.transports.sqlite import SqliteTransport
from harness.gunicorn_server import GunicornServer, ServerPool, server_env
from harness.procfs import flock_holders
from harness.waiting import wait_for
from probe_apps import PROBE_APP, executions, side_effects

pytestmark = pytest.mark.gunicorn  # see the markers in setup.cfg

CALL_WAIT = 3.0  # a call's wait for its result before a 504 (a worker that did not run it)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a disk that really fills (CI runs as root, as mount needs)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"cannot mount a small tmpfs for the disk-full test (needs root): {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write until the file system refuses a single page more."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for size in (1 << 20, 1 << 16, 1 << 12):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def call(server: GunicornServer, cid: str, tag: str, seconds: float = 0.0) -> requests.Response:
    return requests.post(f"{server.url}/ofa/methods/slow", json={"seconds": seconds, "tag": tag},
                         headers={"X-Correlation-ID": cid}, timeout=30)


def results_in_log(db: Path, cid: str) -> list[str]:
    """The ``slow_RESULT`` records of ``cid`` in the log itself, read without the package."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        values = [bytes(v).decode() if isinstance(v, bytes) else str(v)
                  for (v,) in conn.execute("SELECT value FROM log").fetchall()]
    return [v for v in values if "slow_RESULT" in v and cid in v]


def commands_in_log(db: Path, cid: str) -> bool:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        values = [bytes(v).decode() if isinstance(v, bytes) else str(v)
                  for (v,) in conn.execute("SELECT value FROM log").fetchall()]
    return any("slow_CMD" in v and cid in v for v in values)


def body(answer: requests.Response) -> dict[str, Any]:
    assert answer.status_code != 500, answer.text
    assert answer.headers.get("Content-Type", "").startswith("application/json"), answer.text[:300]
    return answer.json()


def test_a_method_that_ran_on_a_full_disk_says_so_records_its_result_later_and_never_runs_twice(
        small_disk: Path, servers: ServerPool, tmp_path: Path) -> None:  # the disk outlives the servers
    db = small_disk / "openfactory.sqlite3"
    effects = tmp_path / "side-effects.txt"
    asset = f"disk-{uuid.uuid4().hex[:10]}"
    env = server_env({"FLASK_CONFIG": "development", "FLASK_OPENFACTORY_TRANSPORT_URL": f"sqlite:///{db}",
                      "APP_UUID": asset, "OFA_TEST_SIDE_EFFECTS": str(effects),
                      "FLASK_OPENFACTORY_CALL_WAIT": str(CALL_WAIT)})
    server = servers.start(env=env, app=PROBE_APP, workers=2)
    lock = SqliteTransport(f"sqlite:///{db}").lock_path(asset, f"ofa-app-{asset}")
    executor = wait_for(lambda: flock_holders(lock), 10, "the executor's lock")[0]
    (standby,) = [pid for pid in server.worker_pids() if pid != executor]
    assert call(server, str(uuid.uuid4()), "warm-up").status_code == 200

    # the disk fills while the method runs: the command is in the log, its result cannot be;
    # a second command, written behind it before the disk filled, must wait for that result
    cid, queued_cid = str(uuid.uuid4()), str(uuid.uuid4())
    answers: list[requests.Response] = []
    queued_answers: list[requests.Response] = []
    with server.only(executor):
        caller = threading.Thread(target=lambda: answers.append(call(server, cid, "full", seconds=1.0)))
        caller.start()
        wait_for(lambda: [e for e in side_effects(effects) if e.tag == "full"], 10, "the method to start")
        queued = threading.Thread(target=lambda: queued_answers.append(call(server, queued_cid, "queued")))
        queued.start()
        wait_for(lambda: commands_in_log(db, queued_cid), 10, "the second command in the log")
        filler = fill(small_disk)
        filled_at = time.monotonic()
        caller.join(30)
        (answer,) = answers
        said = body(answer)
        print(f"\nthe executing worker answered {answer.status_code} "
              f"{time.monotonic() - filled_at:.2f} s after the disk filled: {said['message']}")
        assert answer.status_code == 504 and said["ran"] is True and said["correlation_id"] == cid, said
        assert "ran" in said["message"] and "nothing was published" not in said["message"], said
        assert said["result_url"].endswith(f"/ofa/results/{cid}")

        ready = server.get("/ofa/ready")
        assert ready.status_code == 503 and "not recorded" in body(ready)["checks"]["commands"]["detail"], ready.text
        retried = call(server, cid, "full", seconds=1.0)  # the same id: answered again, not run again
        assert retried.status_code == 504 and body(retried)["ran"] is True, retried.text
        pending = server.get(f"/ofa/results/{cid}")
        assert pending.status_code == 202 and body(pending)["ran"] is True, pending.text
        fresh = call(server, str(uuid.uuid4()), "refused")  # a new call cannot even be written
        assert fresh.status_code == 503 and "did not run" in body(fresh)["message"], fresh.text
        print(f"a new call meanwhile: 503 {body(fresh)['message']}")

    with server.only(standby):  # a worker that did not run it waits its bounded time, then 504 pending
        elsewhere = call(server, cid, "full", seconds=1.0)
        assert elsewhere.status_code == 504 and body(elsewhere)["correlation_id"] == cid, elsewhere.text
        assert "nothing was published" not in body(elsewhere)["message"]
    queued.join(30)
    assert queued_answers[0].status_code == 504, queued_answers[0].text  # it waits in the log
    assert results_in_log(db, cid) == [], "a result was written while the disk was full"
    assert executions(effects)["full"] == 1
    assert not [e for e in side_effects(effects) if e.tag == "queued"], "a command ran while a result was held"

    # space returns: the result reaches the log by itself, and a retry gets it
    filler.unlink()
    freed_at, freed_wall = time.monotonic(), time.time()
    wait_for(lambda: results_in_log(db, cid), 15, "the held result on the log after space returned")
    print(f"the result was on the log {time.monotonic() - freed_at:.2f} s after space returned")
    wait_for(lambda: server.get("/ofa/ready").status_code == 200, 15, "ready 200 again")
    for worker in (executor, standby):
        with server.only(worker):
            again = call(server, cid, "full", seconds=1.0)
            assert again.status_code == 200 and body(again)["status"] == "OK", again.text
            assert body(again)["result"]["tag"] == "full"
    assert call(server, str(uuid.uuid4()), "after").status_code == 200
    done = executions(effects)
    assert done["full"] == 1 and done["after"] == 1 and done["refused"] == 0 and done["queued"] == 1, done
    (queued_start,) = [e.at for e in side_effects(effects) if e.tag == "queued" and e.event == "start"]
    assert queued_start >= freed_wall, "the second command ran before the held result was recorded"
    assert len(results_in_log(db, cid)) == 1, "the held result was written more than once"

