"""The README's own app, run as printed: through the pytest plugin, and under gunicorn on Kafka.

The quickstart (``myapp/__init__.py``, ``myapp/oven.py``) and the background
task / subscription example are extracted from README.md by ``readme.py``, so
an example that stops running fails here. The testing-kit section is run by
tests/test_testing_kit.py.
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from harness.broker import TansuBroker
from harness.gunicorn_server import GUNICORN, server_env
from harness.procfs import free_port
from harness.topic_watch import CommandSender, TopicWatcher, results_by_cid
from harness.waiting import wait_for
from ksqldb_standin import running_standin
from readme import quickstart_files, section_blocks

pytest_plugins = ["pytester"]

# The remote-asset example of the quickstart needs a PRESS-7 to talk to.
PRESS_APP = '''
from typing import Annotated
from flask import Flask
from flask_openfactory import AssetBlueprint, EventAttribute, FlaskOpenFactory, SampleAttribute

press = AssetBlueprint("press", __name__)
temperature = press.attribute(SampleAttribute("temperature", tag="Temperature", default=41.5))
state = press.attribute(EventAttribute("state", tag="Execution", default="OPEN"))

@press.ofa_method()
def clamp(force: int) -> dict:
    state.set("CLAMPED")
    return {"force": force}

def create_press(url):
    app = Flask("press")
    app.config.update(OPENFACTORY_APP_UUID="PRESS-7", OPENFACTORY_TRANSPORT_URL=url)
    FlaskOpenFactory(app)
    app.register_blueprint(press)
    return app
'''

USER_TESTS = '''
import textwrap
import pytest
from flask_openfactory.testing import OpenFactoryTester
from press_app import create_press

REMOTE_EXAMPLE = {remote!r}


def test_heat_answers_ok_and_publishes(ofa):
    result = ofa.call("heat", setpoint="250", ramp="3")
    assert (result.status, result.result) == ("OK", {{"setpoint": 250.0, "ramp": 3}})
    ofa.assert_published("state", value="HEATING")


def test_a_refused_set_point_is_an_error_and_a_warning_condition(ofa):
    result = ofa.call("heat", setpoint=400)
    assert result.status == "ERROR" and "above 300" in result.error
    ofa.assert_published("overheat", tag="Warning")


def test_the_task_regulates_and_the_subscription_reacts(ofa):
    ofa.assert_published("temperature", value=lambda v: 199.0 < v < 201.0, timeout=5)
    ofa.assert_published("regulate_task", tag="Normal", timeout=5)
    ofa.feed("PRESS-7", "state", "CLAMPED", type="Events", tag="Execution")
    ofa.assert_published("state", value="READY")


def test_the_remote_asset_example(ofa):
    with OpenFactoryTester(create_press(ofa.runtime.settings.transport_url)):
        scope = {{}}
        with ofa.app.app_context():
            exec(compile(REMOTE_EXAMPLE, "README.md (remote assets)", "exec"), scope)
    assert scope["press"]["temperature"] == 41.5 and "clamp" in scope["press"].methods()
    assert (scope["result"].status, scope["result"].result) == ("OK", {{"force": 120}})
'''


def remote_example() -> str:
    (block,) = [body for lang, body in section_blocks("Quickstart: an app of your own")
                if lang == "python" and "current_openfactory.asset(" in body]
    return block


def write_quickstart(directory: Path) -> None:
    for path, text in quickstart_files().items():
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("environment", [{}, {"KAFKA_BROKER": "127.0.0.1:1"}], ids=["laptop", "platform-env"])
def test_the_quickstart_through_the_plugin_leaves_no_file_and_uses_no_live_log(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]) -> None:
    """The factory ignores ``config_name``: the plugin still runs it on a memory log of its own."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)  # a platform's broker (here one that does not exist)
    write_quickstart(pytester.path)
    (pytester.path / "press_app.py").write_text(PRESS_APP, encoding="utf-8")
    pytester.makefile(".ini", pytest="[pytest]\nopenfactory_app = myapp:create_app\n")
    pytester.makepyfile(test_oven=USER_TESTS.format(remote=remote_example()))
    before = set(pytester.path.rglob("*"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    created = sorted(str(p.relative_to(pytester.path)) for p in set(pytester.path.rglob("*")) - before
                     if "__pycache__" not in p.parts and not p.name.startswith(("runpytest", "stdout", "stderr")))
    assert created == [], f"the tests left files in the app's folder: {created}"


def _gunicorn(directory: Path, port: int, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    """The user's command line: no -c, no gunicorn.conf.py in the folder."""
    command = [GUNICORN, "--no-control-socket", "--bind", f"127.0.0.1:{port}", *args, "myapp:create_app()"]
    with open(log, "ab") as out:
        return subprocess.Popen(command, cwd=directory, env=server_env(env), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


@pytest.mark.gunicorn
def test_the_quickstart_on_the_platform_environment_without_hooks(
        kafka_broker: TansuBroker, unique_topic: str, tmp_path: Path) -> None:
    """``KAFKA_BROKER=… APP_UUID=… gunicorn "myapp:create_app()"``: Kafka, the platform's UUID,
    a command executed after the first health probe, the missing hooks said once,
    ``avail=UNAVAILABLE`` after SIGTERM."""
    kafka_broker.create_topic(unique_topic, 1)
    asset = f"OVEN-{uuid.uuid4().hex[:8]}"
    write_quickstart(tmp_path)
    log = tmp_path / "gunicorn.log"
    watcher = TopicWatcher(kafka_broker.bootstrap, unique_topic, 1, asset)
    sender = CommandSender(kafka_broker.bootstrap, unique_topic, asset, "TESTER")
    with running_standin(unique_topic) as ksqldb:
        port = free_port()
        env = {"KAFKA_BROKER": kafka_broker.bootstrap, "APP_UUID": asset, "KSQLDB_URL": ksqldb.url,
               "APPLICATION_VERSION": "9.9.9"}
        proc = _gunicorn(tmp_path, port, env, log, "--workers", "2", "--graceful-timeout", "5")
        try:
            health = wait_for(lambda: _get(f"http://127.0.0.1:{port}/ofa/health"), 30, "the health probe")
            assert health.json()["asset_uuid"] == asset
            pids: set[int] = set()  # probe until both workers answered: each starts, one says it
            wait_for(lambda: pids.add(_get(f"http://127.0.0.1:{port}/ofa/health").json()["pid"]) or len(pids) == 2,
                     30, "both workers probed")
            watcher.wait(lambda seen: any(s.record.id == "avail" and s.record.value == "AVAILABLE" for s in seen),
                         30, "avail=AVAILABLE under APP_UUID")
            # The first owner of a fresh command log starts at its end: send once one executes.
            wait_for(lambda: _executing(f"http://127.0.0.1:{port}/ofa/ready"), 30, "a worker executing commands")
            cid = sender.send("heat", {"setpoint": "120"})
            sender.flush()
            ((_, result),) = watcher.wait(lambda seen: results_by_cid(seen, "heat").get(cid), 30, "heat_RESULT")
            assert (result.status, result.result) == ("OK", {"setpoint": 120.0, "ramp": 5})
            assert [s.record.value for s in watcher.values("application_version")][-1] == "9.9.9"
        finally:
            code = _stop(proc)
    text = log.read_text(errors="replace")
    assert code == 0, text
    assert text.count("runs without flask_openfactory's hooks") == 1, text
    watcher.wait(lambda seen: [s.record.value for s in seen if s.record.id == "avail"][-1:] == ["UNAVAILABLE"],
                 15, "avail=UNAVAILABLE last after SIGTERM")
    watcher.close()


def _executing(url: str) -> bool:
    answer = _get(url)
    return answer is not None and answer.json()["checks"]["commands"]["detail"].startswith("executing")


def _get(url: str) -> requests.Response | None:
    try:
        answer = requests.get(url, timeout=5)
    except requests.RequestException:
        return None
    return answer if answer.status_code == 200 else None


@pytest.mark.gunicorn
def test_a_transport_url_that_can_never_work_stops_gunicorn_at_boot_naming_the_setting(tmp_path: Path) -> None:
    write_quickstart(tmp_path)
    log = tmp_path / "gunicorn.log"
    started = time.monotonic()
    proc = _gunicorn(tmp_path, free_port(), {"FLASK_OPENFACTORY_TRANSPORT_URL": "kafka://"}, log, "--workers", "2")
    try:
        code = proc.wait(30)
    finally:
        _stop(proc)
    elapsed = time.monotonic() - started
    text = log.read_text(errors="replace")
    print(f"gunicorn exited {code} after {elapsed:.2f} s:\n{text}")
    assert code != 0
    assert "OPENFACTORY_TRANSPORT_URL" in text and "names no broker" in text
    # No traceback of ours (gunicorn's master may print its own HaltServer twice when both
    # workers fail at once: a race in gunicorn's reaping, exit status 1 instead of 4).
    assert "flask_openfactory" not in text and "ConfigurationError" not in text
    assert text.count("OPENFACTORY_TRANSPORT_URL") <= 2  # one line per worker that booted
