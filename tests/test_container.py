"""The Dockerfile, as far as it can be tested without a Docker engine.

What is checked: the instructions (base image, non-root user, the files it
copies exist, HEALTHCHECK, CMD), and the image's entry command run here from a
copy of exactly the files it copies, with the environment the platform gives
a container: it serves, publishes on Kafka under ``APP_UUID``, its HEALTHCHECK
command passes, and after SIGTERM it has published ``avail=UNAVAILABLE`` and
exited within Docker's and Swarm's 10 s stop grace period.
What is not: building the image (pip inside python:3.13-slim), the user's
permissions inside it, Docker's own HEALTHCHECK scheduling.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from flask_openfactory import gunicorn_conf
from harness.broker import TansuBroker
from harness.gunicorn_server import BIN, server_env
from harness.paths import REPO
from harness.procfs import free_port
from harness.topic_watch import TopicWatcher
from harness.waiting import wait_for
from ksqldb_standin import running_standin

STOP_GRACE_PERIOD = 10.0  # Docker's and Swarm's default: SIGTERM, then SIGKILL


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in (REPO / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in joined]


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments[arguments.index("["):])
    assert isinstance(value, list), arguments
    return [str(v) for v in value]


def single(kind: str) -> str:
    (value,) = [args for instruction, args in instructions() if instruction == kind]
    return value


def test_the_dockerfile_instructions() -> None:
    assert single("FROM") == "python:3.13-slim"
    assert single("USER") not in ("root", "0")
    env = dict(pair.split("=", 1) for pair in shlex.split(single("ENV")))
    assert env["PORT"] == "4000"
    healthcheck = single("HEALTHCHECK")
    assert "/ofa/health" in healthcheck and "--timeout=" in healthcheck
    assert exec_form(single("CMD"))[:3] == ["gunicorn", "-c", "python:flask_openfactory.gunicorn_conf"]
    for instruction, args in instructions():
        if instruction == "COPY":
            for source in shlex.split(args)[:-1]:
                assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"


def test_stop_timing_fits_the_grace_period() -> None:
    """Workers stop within graceful_timeout, then the master publishes avail=UNAVAILABLE."""
    assert gunicorn_conf.graceful_timeout + gunicorn_conf.ON_EXIT_BUDGET + 1.0 < STOP_GRACE_PERIOD


def image_files(root: Path) -> Path:
    """The app's files as the Dockerfile copies them into WORKDIR (the package is installed already)."""
    workdir = root / "app"
    workdir.mkdir()
    for instruction, args in instructions():
        if instruction != "COPY":
            continue
        *sources, target = shlex.split(args)
        for source in sources:
            if source in ("flask_openfactory", "setup.cfg", "pyproject.toml", "README.md"):
                continue  # pip-installed in the image; here the test environment has the package
            # Docker's rule: a target ending in "/" is a folder that receives the source by name
            destination = workdir / target / Path(source).name if target.endswith("/") else workdir / target
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, destination, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(REPO / source, destination)
    return workdir


@pytest.mark.gunicorn
def test_the_entry_command_serves_passes_its_healthcheck_and_stops_within_the_grace_period(
        kafka_broker: TansuBroker, unique_topic: str, tmp_path: Path) -> None:
    kafka_broker.create_topic(unique_topic, 1)
    workdir = image_files(tmp_path)
    env_line = dict(pair.split("=", 1) for pair in shlex.split(single("ENV")))
    asset = f"CNC-{uuid.uuid4().hex[:8]}"
    port = free_port()
    command = exec_form(single("CMD"))
    command[0] = str(BIN / command[0])
    watcher = TopicWatcher(kafka_broker.bootstrap, unique_topic, 1, asset)
    log = tmp_path / "container.log"
    with running_standin(unique_topic) as ksqldb:
        env = server_env({**env_line, "PORT": str(port), "KAFKA_BROKER": kafka_broker.bootstrap, "APP_UUID": asset,
                          "KSQLDB_URL": ksqldb.url, "SECRET_KEY": "container-test-secret"})
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        with open(log, "ab") as out:
            proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            healthcheck = exec_form(single("HEALTHCHECK").split("CMD", 1)[1])
            healthcheck[0] = sys.executable
            wait_for(lambda: subprocess.run(healthcheck, env=env, capture_output=True, timeout=10).returncode == 0,
                     60, "the HEALTHCHECK command passing")
            watcher.wait(lambda seen: any(s.record.id == "avail" and s.record.value == "AVAILABLE" for s in seen),
                         30, "avail=AVAILABLE on Kafka under APP_UUID")
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(STOP_GRACE_PERIOD + 20)
            stopped_after = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    text = log.read_text(errors="replace")
    print(f"entry command exited {code} {stopped_after:.2f} s after SIGTERM\n{text}")
    assert code == 0, text
    assert stopped_after < STOP_GRACE_PERIOD, text
    watcher.wait(lambda seen: [s.record.value for s in seen if s.record.id == "avail"][-1:] == ["UNAVAILABLE"],
                 15, "avail=UNAVAILABLE after SIGTERM")
    watcher.close()
