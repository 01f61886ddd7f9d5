"""Issue 11 acceptance: one asset, one order, one truth, under real gunicorn.

Every call goes through the asset's log and its one executor, whatever the
channel (HTTP or ``flask ofa call``); reads follow writes in every worker;
a replayed command never runs twice, after a takeover or a restart; a reload
hands the executor role over at once; the start-up records are written once
per start of the deployment. Each is counted from outside the server: the
side-effect file the probe methods append to, the asset's log (the sqlite
file or the topic), HTTP answers.
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from flask_openfactory.wire.commands import command_record, new_envelope
from flask_openfactory.wire.protocol import Record
from harness.broker import TansuBroker
from harness.gunicorn_server import FLASK, ServerPool, server_env
from harness.paths import REPO
from harness.sqlite_log import log_records
from harness.sqlite_log import results_of as results_in
from harness.topic_watch import CommandSender, TopicWatcher, answered
from harness.waiting import wait_for
from kafka_config import KAFKA_TEST_CONFIG
from probe_apps import PROBE_APP, executions, side_effects

pytestmark = pytest.mark.gunicorn  # see the markers in setup.cfg

PARTITIONS = 3


def sqlite_env(tmp_path: Path, asset: str) -> dict[str, str]:
    return server_env({
        "FLASK_CONFIG": "development",
        "FLASK_OPENFACTORY_TRANSPORT_URL": f"sqlite:///{tmp_path / 'openfactory.sqlite3'}",
        "APP_UUID": asset,
        "OFA_TEST_SIDE_EFFECTS": str(tmp_path / "side-effects.txt"),
    })


def post(url: str, path: str, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.post(url + path, json=body, headers=headers or {}, timeout=60)


# -- the log is the one order --------------------------------------------------------------


def test_http_calls_and_cli_calls_never_overlap(servers: ServerPool, tmp_path: Path) -> None:
    asset = f"one-order-{uuid.uuid4().hex[:8]}"
    env = sqlite_env(tmp_path, asset)
    server = servers.start(env=env, app=PROBE_APP, workers=3)
    effects = tmp_path / "side-effects.txt"

    def http_call(i: int) -> int:
        return post(server.url, "/ofa/methods/slow", {"seconds": 0.05, "tag": f"http-{i}"}).status_code

    def cli_call(i: int) -> int:
        done = subprocess.run(
            [FLASK, "--app", "gunicorn_app:create_app()", "ofa", "call", "slow", "seconds=0.05", f"tag=cli-{i}",
             "--timeout", "120"],
            cwd=REPO, env={**env, "PYTHONPATH": str(REPO / "tests")}, capture_output=True, text=True, timeout=180)
        assert done.stdout.startswith("OK slow"), done.stdout + done.stderr
        return done.returncode

    with ThreadPoolExecutor(max_workers=40) as pool:
        https = [pool.submit(http_call, i) for i in range(20)]
        clis = [pool.submit(cli_call, i) for i in range(20)]
        assert [f.result() for f in https] == [200] * 20
        assert [f.result() for f in clis] == [0] * 20

    events = side_effects(effects)
    starts = {e.tag: e for e in events if e.event == "start"}
    ends = {e.tag: e for e in events if e.event == "done"}
    assert len(starts) == len(ends) == 40, (len(starts), len(ends))
    intervals = sorted((starts[tag].at, ends[tag].at, starts[tag].pid) for tag in starts)
    overlaps = sum(1 for a, b in zip(intervals, intervals[1:], strict=False) if b[0] < a[1])
    pids = {pid for _, _, pid in intervals}
    print(f"\n40 calls (20 HTTP, 20 CLI) ran in {len(pids)} process(es); overlapping executions: {overlaps}")
    assert overlaps == 0
    # every HTTP call is in the log as a command, so the platform sees it
    commands = [r for r in log_records(tmp_path / "openfactory.sqlite3", asset) if r.id == "slow_CMD"]
    assert len(commands) == 40


# -- reads follow writes ------------------------------------------------------------------


def read_your_writes(url: str, rounds: int) -> tuple[int, list[float]]:
    """``rounds`` of POST move_axis x=i then GET position_x: how many reads were stale, and read latencies."""
    stale, latencies = 0, []
    for i in range(rounds):
        answer = post(url, "/ofa/methods/move_axis", {"x": float(i), "y": 0.0})
        assert answer.status_code == 200 and answer.json()["status"] == "OK", answer.text
        started = time.perf_counter()
        read = requests.get(url + "/ofa/attributes/position_x", timeout=30)
        latencies.append((time.perf_counter() - started) * 1000)
        assert read.status_code == 200, read.text
        stale += read.json()["value"] != float(i)
    return stale, latencies


def test_reads_follow_writes_on_sqlite(servers: ServerPool, tmp_path: Path) -> None:
    server = servers.start(env=sqlite_env(tmp_path, f"ryw-{uuid.uuid4().hex[:8]}"), app=PROBE_APP, workers=3)
    stale, latencies = read_your_writes(server.url, 100)
    print(f"\nsqlite -w 3: 100 rounds, {stale} stale reads; read p50 {statistics.median(latencies):.1f} ms")
    assert stale == 0


# -- idempotent calls ---------------------------------------------------------------------


def test_a_retried_post_answers_the_first_result_and_runs_once_even_after_a_restart(
        servers: ServerPool, tmp_path: Path) -> None:
    asset = f"idem-{uuid.uuid4().hex[:8]}"
    env = sqlite_env(tmp_path, asset)
    server = servers.start(env=env, app=PROBE_APP, workers=3)
    cid = str(uuid.uuid4())
    headers = {"X-Correlation-ID": cid}
    first = post(server.url, "/ofa/methods/record", {"tag": "once"}, headers)
    assert first.status_code == 200, first.text
    # retried from several connections (so several workers), then after a restart
    retries = [post(server.url, "/ofa/methods/record", {"tag": "once"}, headers) for _ in range(10)]
    assert server.stop() == 0
    server = servers.start(env=env, app=PROBE_APP, workers=3)
    retries.append(post(server.url, "/ofa/methods/record", {"tag": "once"}, headers))
    assert {r.status_code for r in retries} == {200}
    assert {json.dumps(r.json(), sort_keys=True) for r in retries} == {json.dumps(first.json(), sort_keys=True)}
    # the same id for another call is refused, not run
    other = post(server.url, "/ofa/methods/record", {"tag": "another"}, headers)
    assert other.status_code == 409, other.text
    fetched = requests.get(f"{server.url}/ofa/results/{cid}", timeout=10)
    assert fetched.status_code == 200 and fetched.json() == first.json()
    assert server.stop() == 0
    assert executions(tmp_path / "side-effects.txt") == Counter({"once": 1})
    assert len(results_in(log_records(tmp_path / "openfactory.sqlite3", asset), "record")[cid]) == 1


def test_no_result_in_time_is_a_504_and_the_result_can_be_fetched_later(
        servers: ServerPool, tmp_path: Path) -> None:
    env = {**sqlite_env(tmp_path, f"pending-{uuid.uuid4().hex[:8]}"), "FLASK_OPENFACTORY_CALL_WAIT": "0.3"}
    server = servers.start(env=env, app=PROBE_APP, workers=2)
    answer = post(server.url, "/ofa/methods/slow", {"seconds": 1.5, "tag": "late"})
    assert answer.status_code == 504, answer.text
    body = answer.json()
    cid = body["correlation_id"]
    assert answer.headers["X-Correlation-ID"] == cid and body["result_url"].endswith(cid)
    assert requests.get(f"{server.url}/ofa/results/{cid}", timeout=10).status_code == 202
    fetched = wait_for(lambda: (r := requests.get(f"{server.url}/ofa/results/{cid}", timeout=10)).status_code == 200
                       and r, 30, "the late result")
    assert fetched.json()["status"] == "OK" and fetched.json()["result"]["tag"] == "late"
    cli = subprocess.run([FLASK, "--app", "gunicorn_app:create_app()", "ofa", "result", cid], cwd=REPO,
                         env={**env, "PYTHONPATH": str(REPO / "tests")}, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and cli.stdout.startswith("OK slow"), cli.stdout + cli.stderr
    assert executions(tmp_path / "side-effects.txt")["late"] == 1


# -- one deployment, one start ------------------------------------------------------------


def startup_counts(records: list[Record]) -> Counter[str]:
    return Counter(r.id for r in records if r.id in ("AssetType", "application_version", "move_axis", "avail"))


def test_start_up_records_once_per_start_and_unavailable_once_per_server(servers: ServerPool,
                                                                          tmp_path: Path) -> None:
    asset = f"start-{uuid.uuid4().hex[:8]}"
    env = sqlite_env(tmp_path, asset)
    db = tmp_path / "openfactory.sqlite3"
    first = servers.start(env=env, app=PROBE_APP, workers=2)
    assert startup_counts(log_records(db, asset)) == Counter(
        {"AssetType": 1, "application_version": 1, "move_axis": 1, "avail": 1})
    first.signal(signal.SIGHUP)  # a reload with the same code: nothing to announce again
    wait_for(lambda: "Hang up" in first.log_text() and len(first.worker_pids()) == 2, 30, "the reload")
    assert post(first.url, "/ofa/methods/record", {"tag": "after-hup"}).status_code == 200
    # a second server on this host serving the same asset
    second = servers.start(env=env, app=PROBE_APP, workers=2, executing=False)
    assert first.stop() == 0
    avail = [r.value for r in log_records(db, asset) if r.id == "avail"]
    assert "UNAVAILABLE" not in avail, f"the first server to stop said UNAVAILABLE while the other serves: {avail}"
    assert post(second.url, "/ofa/methods/record", {"tag": "second"}).status_code == 200
    assert second.stop() == 0
    records = log_records(db, asset)
    counts = startup_counts(records)
    assert counts["AssetType"] == 2 and counts["move_axis"] == 2, counts  # two servers, two starts
    avail = [r.value for r in records if r.id == "avail"]
    assert avail == ["AVAILABLE", "AVAILABLE", "UNAVAILABLE"], avail


def stream_with_hup(server: Any, count: int, send: Any, rate: float = 50.0, hup_at: int = 100) -> None:
    """``send(i)`` for ``count`` commands at a steady ``rate``; ``kill -HUP`` before command ``hup_at``."""
    start = time.monotonic()
    for i in range(count):
        if i == hup_at:
            server.signal(signal.SIGHUP)
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the stream, not waiting for a condition
        send(i)


# -- Kafka -------------------------------------------------------------------------------


@pytest.fixture
def kafka_env(kafka_broker: TansuBroker, unique_topic: str, tmp_path: Path) -> dict[str, str]:
    kafka_broker.create_topic(unique_topic, PARTITIONS)
    return server_env({
        "FLASK_CONFIG": "production",
        "KAFKA_BROKER": kafka_broker.bootstrap,
        "APP_UUID": f"one-order-kafka-{uuid.uuid4().hex[:8]}",
        "SECRET_KEY": "one-order-secret",
        "FLASK_OPENFACTORY_ASSETS_TOPIC": unique_topic,
        "FLASK_OPENFACTORY_LOCK_DIR": str(tmp_path / "locks"),
        "FLASK_OPENFACTORY_KAFKA_CONFIG": json.dumps(KAFKA_TEST_CONFIG),
        "OFA_TEST_SIDE_EFFECTS": str(tmp_path / "side-effects.txt"),
    })


def test_reads_follow_writes_on_kafka(servers: ServerPool, kafka_env: dict[str, str]) -> None:
    server = servers.start(env=kafka_env, app=PROBE_APP, workers=3)
    stale, latencies = read_your_writes(server.url, 100)
    print(f"\nKafka -w 3: 100 rounds, {stale} stale reads; read p50 {statistics.median(latencies):.1f} ms")
    assert stale == 0


def test_a_replayed_command_never_runs_again_after_sigkill_or_restart(
        servers: ServerPool, kafka_env: dict[str, str], kafka_broker: TansuBroker, tmp_path: Path) -> None:
    asset, topic = kafka_env["APP_UUID"], kafka_env["FLASK_OPENFACTORY_ASSETS_TOPIC"]
    watcher = TopicWatcher(kafka_broker.bootstrap, topic, PARTITIONS, asset)
    sender = CommandSender(kafka_broker.bootstrap, topic, asset, sender_uuid="replay-test")
    effects = tmp_path / "side-effects.txt"
    try:
        server = servers.start(env=kafka_env, app=PROBE_APP, workers=3)
        envelope = new_envelope("replay-test", {"tag": "replayed"})
        replay = command_record(asset, "record", envelope)
        cid = envelope.correlation_id

        def replay_and_settle(label: str) -> None:
            """Write the same record again, then a fresh command: once that is answered the replay was handled."""
            sender.publish(replay)
            marker = sender.send("record", {"tag": f"marker-{label}"})
            sender.flush()
            watcher.wait(answered([marker], "record"), 60, f"the marker after the replay ({label})")

        sender.publish(replay)
        sender.flush()
        watcher.wait(answered([cid], "record"), 60, "the first execution")
        for pid in server.worker_pids():  # every worker at once: the memory of every process is gone
            server._signal_worker(pid, signal.SIGKILL)
        wait_for(lambda: len(server.worker_pids()) == 3, 60, "three new workers")
        server.wait_ready(60)
        replay_and_settle("after-sigkill")
        assert server.stop() == 0
        server = servers.start(env=kafka_env, app=PROBE_APP, workers=3)
        replay_and_settle("after-restart")
        assert server.stop() == 0
        watcher.barrier(sender)
        oks = [r for _, r in watcher.results("record").get(cid, []) if r.status == "OK"]
        done = executions(effects)
        print(f"\nreplayed after SIGKILL of all workers and after a restart: executions {done['replayed']}, "
              f"OK results {len(oks)}")
        assert done["replayed"] == 1 and len(oks) == 1
        assert done["marker-after-sigkill"] == 1 and done["marker-after-restart"] == 1
    finally:
        watcher.close()


def test_a_reload_during_a_stream_hands_the_role_over_at_once(
        servers: ServerPool, kafka_env: dict[str, str], kafka_broker: TansuBroker, tmp_path: Path) -> None:
    asset, topic = kafka_env["APP_UUID"], kafka_env["FLASK_OPENFACTORY_ASSETS_TOPIC"]
    watcher = TopicWatcher(kafka_broker.bootstrap, topic, PARTITIONS, asset)
    sender = CommandSender(kafka_broker.bootstrap, topic, asset, sender_uuid="reload-test")
    try:
        server = servers.start(env=kafka_env, app=PROBE_APP, workers=3)
        sent: dict[str, float] = {}
        count = 300
        stream_with_hup(server, count, lambda i: sent.update(
            {sender.send("record", {"tag": f"hup-{i}"}): time.monotonic()}))
        sender.flush()
        watcher.wait(answered(sent, "record"), 120, "every command's result")
        results = watcher.results("record")
        latencies = sorted((results[cid][0][0].received - at) * 1000 for cid, at in sent.items())
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        assert server.stop() == 0
        watcher.barrier(sender)
        done = executions(tmp_path / "side-effects.txt")
        print(f"\nHUP during 300 commands at 50/s: p50 {statistics.median(latencies):.0f} ms, "
              f"p99 {p99:.0f} ms, max {latencies[-1]:.0f} ms; executions {sum(done.values())}")
        assert all(len(results[cid]) == 1 for cid in sent)
        assert sum(done.values()) == count and set(done.values()) == {1}
        assert p99 < 2000, f"p99 latency during the reload {p99:.0f} ms"
    finally:
        watcher.close()


def test_a_reload_on_sqlite_hands_the_role_over_at_once(servers: ServerPool, tmp_path: Path) -> None:
    """The embedded default: ``kill -HUP`` during 300 commands at 50/s, latency from send to execution."""
    from demo import create_app

    asset = f"hup-sqlite-{uuid.uuid4().hex[:8]}"
    env = sqlite_env(tmp_path, asset)
    server = servers.start(env=env, app=PROBE_APP, workers=3)
    sender_app = create_app("development", {"OPENFACTORY_TRANSPORT_URL": env["FLASK_OPENFACTORY_TRANSPORT_URL"],
                                            "OPENFACTORY_APP_UUID": "hup-sender"})
    sender = sender_app.extensions["openfactory"].runtime
    sent: dict[str, float] = {}
    count = 300

    def send(i: int) -> None:
        sent[f"hup-{i}"] = time.time()
        sender.send_command(asset, "record", {"tag": f"hup-{i}"})

    try:
        stream_with_hup(server, count, send)
    finally:
        sender.stop(timeout=2.0, publish_unavailable=False)
    effects = tmp_path / "side-effects.txt"
    wait_for(lambda: set(sent) <= set(executions(effects)), 120, "every command executed")
    assert server.stop() == 0
    done = {e.tag: e.at for e in side_effects(effects) if e.event == "done"}
    latencies = sorted((done[tag] - at) * 1000 for tag, at in sent.items())
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    counts = executions(effects)
    results = results_in(log_records(tmp_path / "openfactory.sqlite3", asset), "record")
    print(f"\nsqlite: HUP during 300 commands at 50/s: p50 {statistics.median(latencies):.0f} ms, "
          f"p99 {p99:.0f} ms, max {latencies[-1]:.0f} ms; executions {sum(counts.values())}")
    assert set(counts.values()) == {1} and len(counts) == count
    assert len(results) == count and all(len(answers) == 1 for answers in results.values())
    assert p99 < 2000, f"p99 latency during the reload {p99:.0f} ms"
