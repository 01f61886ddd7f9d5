"""``flask ofa``: status, call, attributes, methods through a real transport.

The CLI never starts the runtime; tests that need a method executed start it
themselves, standing in for the serving process, while the command takes its
own path through the transport (as another asset would).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from flask import Flask
from flask.testing import FlaskCliRunner

from app_factory import build_app
from flask_openfactory import AssetBlueprint, ConfigurationError, SampleAttribute, TransportError
from flask_openfactory.runtime import core as runtime_module
from flask_openfactory.transports import memory as memory_module
from flask_openfactory.transports.base import Health

ASSET = "CLI-TEST-ASSET"


def machine_blueprint() -> AssetBlueprint:
    """The asset: one sample and two methods (one of which can fail)."""
    bp = AssetBlueprint("machine", __name__)
    position = bp.attribute(SampleAttribute("position_x", tag="Position.X"))

    @bp.ofa_method(description="Move the axes.", param_description={"speed": "feed rate"})
    def move_axis(x: float, y: float, speed: int = 100) -> dict[str, float]:
        if speed <= 0:
            raise ValueError("speed must be positive")
        position.set(x)
        return {"x": x, "y": y}

    @bp.ofa_method()
    def home() -> str:
        """Return to the origin."""
        position.set(0.0)
        return "homed"

    return bp


def make_app(transport_url: str, **config: Any) -> Flask:
    """An app whose asset has one sample and two methods (one of which can fail)."""
    return build_app(
        __name__,
        {
            "TESTING": True,
            "OPENFACTORY_APP_UUID": ASSET,
            "OPENFACTORY_TRANSPORT_URL": transport_url,
            "OPENFACTORY_KSQLDB_URL": None,
            "OPENFACTORY_STOP_TIMEOUT": 2.0,
            **config,
        },
        blueprints=[machine_blueprint()],
        add_api=False,
    )


@pytest.fixture
def app() -> Flask:
    return make_app(f"memory://cli-{uuid.uuid4().hex}")


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def serving(app: Flask) -> Iterator[Flask]:
    """The serving process's runtime, started so that commands get executed."""
    runtime = app.extensions["openfactory"].runtime
    before = set(threading.enumerate())  # other tests' runtimes are not this one's business
    runtime.start()
    try:
        yield app
    finally:
        runtime.stop(2.0)
        left = [t for t in set(threading.enumerate()) - before if t.name.startswith("ofa-")]
        for thread in left:
            thread.join(2.0)
        assert not [t.name for t in left if t.is_alive()], "stop() left runtime threads behind"


def ofa(runner: FlaskCliRunner, *args: str) -> Result:
    return runner.invoke(args=["ofa", *args])


# -- status ---------------------------------------------------------------------------


def test_status_text_lists_identity_transport_attributes_and_methods(serving: Flask) -> None:
    serving.config["OPENFACTORY_CONFIG_NAME"] = "testing"
    result = ofa(serving.test_cli_runner(), "status")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"asset:     {ASSET}" in out
    assert "config:    testing" in out
    assert "transport: memory://cli-" in out and "(ok:" in out
    assert "avail" in out and "AVAILABLE" in out and "Availability" in out
    assert "AssetType" in out and "OpenFactoryApp" in out
    assert "position_x" in out and "Samples" in out
    assert "move_axis(x: float, y: float, speed: int = 100)" in out
    assert "home()" in out
    assert "ksqlDB: not configured" in out


def test_status_json_is_one_object_with_values_methods_and_transport_ok(serving: Flask) -> None:
    result = ofa(serving.test_cli_runner(), "status", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["asset_uuid"] == ASSET
    assert report["config_name"] == "unknown"
    assert report["transport"]["ok"] is True
    assert report["transport"]["url"].startswith("memory://cli-")
    values = {a["id"]: a for a in report["attributes"]}
    assert values["avail"]["value"] == "AVAILABLE"
    assert values["avail"]["tag"] == "Availability" and values["avail"]["type"] == "Events"
    assert values["avail"]["timestamp"].endswith("Z")
    assert values["position_x"]["value"] == "UNAVAILABLE"
    assert "move_axis" not in values  # method advertisements are methods, not attributes
    methods = {m["name"]: m for m in report["methods"]}
    assert methods["move_axis"]["signature"] == "move_axis(x: float, y: float, speed: int = 100)"
    assert methods["move_axis"]["arguments"][2] == {
        "name": "speed", "description": "feed rate", "type": "int", "required": False, "default": 100,
    }
    assert methods["home"]["description"] == "Return to the origin."
    assert report["ksqldb"] == {"configured": False}
    assert report["ok"] is True


def test_status_before_the_app_ever_ran_lists_declared_attributes_without_value(runner: FlaskCliRunner) -> None:
    result = ofa(runner, "status")
    assert result.exit_code == 0, result.output
    assert "attributes (0):" in result.stdout
    assert "declared, no value yet:" in result.stdout and "position_x" in result.stdout


def test_status_does_not_start_the_runtime(app: Flask, runner: FlaskCliRunner) -> None:
    runtime = app.extensions["openfactory"].runtime
    assert ofa(runner, "status").exit_code == 0
    assert ofa(runner, "attributes").exit_code == 0
    assert not runtime.started
    assert runtime.records() == []  # the CLI published nothing either


def test_status_exits_1_when_the_transport_check_fails(
    runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_module.MemoryTransport, "check",
                        lambda self, timeout: Health(False, "broker down"))
    result = ofa(runner, "status")
    assert result.exit_code == 1
    assert "NOT ANSWERING: broker down" in result.stdout
    assert "does not answer: broker down" in result.stderr
    assert "Traceback" not in result.output


def test_status_exits_1_within_seconds_when_the_check_hangs(
    runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    hanging: list[threading.Thread] = []

    def hang(self: object, timeout: float) -> Health:
        hanging.append(threading.current_thread())
        release.wait(30)
        return Health(True, "too late")

    monkeypatch.setattr(memory_module.MemoryTransport, "check", hang)
    started = time.monotonic()
    try:
        result = ofa(runner, "status", "--timeout", "0.3", "--json")
        assert time.monotonic() - started < 3.0
    finally:
        release.set()  # leave no thread behind for other tests to count
        for thread in hanging:
            thread.join(5)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["transport"]["ok"] is False and "did not return within" in report["transport"]["detail"]
    assert report["attributes"] is None and report["ok"] is False


def test_status_exits_1_when_the_transport_raises(runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: object, timeout: float) -> Health:
        raise OSError("connection refused\nsecond line")

    monkeypatch.setattr(memory_module.MemoryTransport, "check", boom)
    result = ofa(runner, "status")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and "memory://cli-" in errors[0] and "OSError: connection refused second line" in errors[0]


def test_a_sqlite_path_that_is_a_directory_fails_when_the_app_is_created(tmp_path: Path) -> None:
    """A setting that can never work stops every command at once, naming the setting."""
    with pytest.raises(ConfigurationError, match="OPENFACTORY_TRANSPORT_URL: .*is a directory"):
        make_app(f"sqlite:///{tmp_path}")


def test_credentials_in_the_url_or_a_transport_error_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(url: str, options: object = None) -> object:
        raise TransportError(f"cannot connect to {url.split('://', 1)[1]}: refused")

    monkeypatch.setattr(runtime_module, "create_transport", refuse)
    app = make_app("memory://user:s3cret@broker:9092?token=abc123")
    for args in (["status", "--json"], ["status"], ["attributes"], ["call", "home"]):
        result = ofa(app.test_cli_runner(), *args)
        assert result.exit_code in (1, 5), result.output
        assert "s3cret" not in result.output and "abc123" not in result.output
        assert "user:***@broker:9092" in result.stderr
        assert "Traceback" not in result.output


def test_status_says_when_ksqldb_is_not_reachable(unused_port: int) -> None:
    pytest.importorskip("flask_openfactory.ksqldb")
    app = make_app(f"memory://cli-{uuid.uuid4().hex}", OPENFACTORY_KSQLDB_URL=f"http://127.0.0.1:{unused_port}")
    result = ofa(app.test_cli_runner(), "status", "--timeout", "1")
    assert result.exit_code == 0, result.output  # ksqlDB is informational; the transport answers
    assert f"ksqlDB at http://127.0.0.1:{unused_port} not reachable:" in result.stdout


def test_status_shows_the_platform_view_from_ksqldb(monkeypatch: pytest.MonkeyPatch) -> None:
    ksqldb = pytest.importorskip("flask_openfactory.ksqldb")
    asked: list[tuple[str, Any]] = []

    class FakeClient:
        def __init__(self, base_url: str, *, timeout: float, **kwargs: Any) -> None:
            asked.append(("init", (base_url, timeout)))

        def asset_type(self, uuid: str) -> str | None:
            asked.append(("type", uuid))
            return "OpenFactoryApp"

        def asset_state(self, uuid: str) -> list[dict[str, Any]]:
            return [{"ID": "avail", "VALUE": "AVAILABLE", "TYPE": "Events", "TAG": "Availability",
                     "TIMESTAMP": "2026-05-04T12:34:56.789Z"}]

        def close(self) -> None:
            asked.append(("close", None))

    monkeypatch.setattr(ksqldb, "KsqlDBClient", FakeClient)
    app = make_app(f"memory://cli-{uuid.uuid4().hex}", OPENFACTORY_KSQLDB_URL="http://ksqldb:8088")
    result = ofa(app.test_cli_runner(), "status", "--timeout", "2")
    assert result.exit_code == 0, result.output
    assert "ksqlDB at http://ksqldb:8088: asset type OpenFactoryApp, 1 attribute(s)" in result.stdout
    assert "2026-05-04T12:34:56.789Z" in result.stdout
    assert ("init", ("http://ksqldb:8088", 2.0)) in asked and ("type", ASSET) in asked and ("close", None) in asked
    report = json.loads(ofa(app.test_cli_runner(), "status", "--json").stdout)
    assert report["ksqldb"]["asset_type"] == "OpenFactoryApp"
    assert report["ksqldb"]["attributes"][0]["value"] == "AVAILABLE"


def test_library_logs_are_quiet_unless_verbose(
    runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    def noisy(self: object, timeout: float) -> Health:
        logging.getLogger("flask_openfactory.kafka").error("FAIL broker retry")
        return Health(False, "broker down")

    monkeypatch.setattr(memory_module.MemoryTransport, "check", noisy)
    level = logging.getLogger("flask_openfactory").level
    assert ofa(runner, "status").exit_code == 1
    assert "FAIL broker retry" not in caplog.text
    assert logging.getLogger("flask_openfactory").level == level  # restored after the command
    assert runner.invoke(args=["ofa", "-v", "status"]).exit_code == 1
    assert "FAIL broker retry" in caplog.text


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- call -----------------------------------------------------------------------------


def test_call_ok_prints_status_result_and_correlation_id(serving: Flask) -> None:
    result = ofa(serving.test_cli_runner(), "call", "move_axis", "x=10", "y=20.5")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"OK move_axis on {ASSET}")
    assert lines[1] == 'result: {"x": 10.0, "y": 20.5}'
    assert uuid.UUID(lines[2].removeprefix("correlation id: "))
    with serving.app_context():
        assert serving.extensions["openfactory"].runtime.value("position_x") == 10.0


def test_call_json(serving: Flask) -> None:
    result = ofa(serving.test_cli_runner(), "call", "home", "--json", "--sender", "OTHER-ASSET")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["status"] == "OK" and report["result"] == "homed" and report["error"] is None
    assert report["sender_uuid"] == "OTHER-ASSET" and report["target"] == ASSET
    assert uuid.UUID(report["correlation_id"])


def test_call_error_exits_1(serving: Flask) -> None:
    result = ofa(serving.test_cli_runner(), "call", "move_axis", "x=1", "y=2", "speed=0")
    assert result.exit_code == 1, result.output
    assert result.stdout.startswith(f"ERROR move_axis on {ASSET}")
    assert "error: ValueError: speed must be positive" in result.stdout
    assert "correlation id: " in result.stdout


def test_call_rejected_exits_2(serving: Flask) -> None:
    result = ofa(serving.test_cli_runner(), "call", "move_axis", "x=abc", "y=2", "--json")
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    assert report["status"] == "REJECTED" and "'abc' is not a valid float" in report["error"]
    assert report["arguments"] == {"x": "abc", "y": "2"}  # sent as strings, as the contract says


def test_call_times_out_with_exit_3_when_no_process_executes(app: Flask, runner: FlaskCliRunner) -> None:
    started = time.monotonic()
    result = ofa(runner, "call", "home", "--timeout", "0.5")
    assert time.monotonic() - started < 4.0
    assert result.exit_code == 3
    assert result.stdout.startswith(f"TIMEOUT home on {ASSET}")
    assert "no home_RESULT" in result.stderr and "is a process executing commands" in result.stderr
    assert not app.extensions["openfactory"].runtime.started


def test_call_no_wait_sends_and_exits_0(app: Flask, runner: FlaskCliRunner) -> None:
    log = memory_module.memory_log(app.config["OPENFACTORY_TRANSPORT_URL"].split("://", 1)[1])
    result = ofa(runner, "call", "home", "--no-wait", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["status"] == "SENT"
    key, value = log.entries[-1]
    assert key == ASSET and value is not None
    record = json.loads(value)
    assert record["ID"] == "home_CMD" and record["TYPE"] == "OpenFactory" and record["TAG"] == "Method.Command"
    assert json.loads(record["VALUE"])["header"]["correlation_id"] == report["correlation_id"]


def test_call_another_target_writes_on_that_asset(app: Flask, runner: FlaskCliRunner) -> None:
    log = memory_module.memory_log(app.config["OPENFACTORY_TRANSPORT_URL"].split("://", 1)[1])
    result = ofa(runner, "call", "spin", "rpm=30", "--target", "OTHER-ASSET", "--timeout", "0.2")
    assert result.exit_code == 3  # no method check on foreign assets: their process decides
    key, value = log.entries[-1]
    assert key == "OTHER-ASSET" and value is not None
    envelope = json.loads(json.loads(value)["VALUE"])
    assert envelope["arguments"] == {"rpm": "30"} and envelope["header"]["sender_uuid"] == ASSET


@pytest.mark.parametrize(
    "args, message",
    [
        (["move_axis", "x10"], "'x10' is not key=value"),
        (["move_axis", "=10"], "'=10' is not key=value"),
        (["move_axis", "x=1", "x=2"], "'x' is given twice"),
        (["jump"], "has no method 'jump' (methods: home, move_axis)"),
        (["move.axis"], "cannot route"),
        (["home", "--target", "bad.uuid"], "cannot route"),
    ],
)
def test_call_bad_usage_exits_4(runner: FlaskCliRunner, args: list[str], message: str) -> None:
    result = ofa(runner, "call", *args)
    assert result.exit_code == 4, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_call_transport_failure_is_one_line_exit_5(runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: object, record: object, on_delivery: object = None) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(memory_module.MemoryTransport, "publish", boom)
    result = ofa(runner, "call", "home", "--timeout", "0.5")
    assert result.exit_code == 5
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and "memory://cli-" in errors[0] and "RuntimeError: disk full" in errors[0]


# -- attributes, methods ------------------------------------------------------------


def test_attributes_table_and_json(serving: Flask) -> None:
    runner = serving.test_cli_runner()
    assert ofa(runner, "call", "move_axis", "x=3", "y=4").exit_code == 0
    result = ofa(runner, "attributes")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "VALUE", "TAG", "TYPE", "TIMESTAMP"]
    by_id = {row.split()[0]: row.split() for row in rows}
    assert by_id["position_x"][1:4] == ["3.0", "Position.X", "Samples"]
    assert by_id["avail"][1:4] == ["AVAILABLE", "Availability", "Events"]
    assert "move_axis_RESULT" in by_id
    data = json.loads(ofa(runner, "attributes", "--json").stdout)
    assert {"id": "position_x", "value": 3.0, "tag": "Position.X", "type": "Samples"}.items() <= next(
        a for a in data if a["id"] == "position_x"
    ).items()


def test_attributes_exit_1_with_one_line_when_the_transport_raises(
    runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(self: object, asset_uuid: str) -> dict[str, Any]:
        raise ConnectionError("no route to host")

    monkeypatch.setattr(memory_module.MemoryTransport, "snapshot", boom)
    result = ofa(runner, "attributes")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "memory://cli-" in result.stderr
    assert "no route to host" in result.stderr


def test_methods_text_and_json(runner: FlaskCliRunner) -> None:
    result = ofa(runner, "methods")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "move_axis(x: float, y: float, speed: int = 100)" in out
    assert "    Move the axes." in out
    assert "    - speed (int, default 100): feed rate" in out
    assert "    - x (float, required)" in out
    assert "home()" in out and "Return to the origin." in out
    data = json.loads(ofa(runner, "methods", "--json").stdout)
    assert [m["name"] for m in data] == ["move_axis", "home"]
    assert data[0]["arguments"][0] == {"name": "x", "description": "", "type": "float", "required": True,
                                       "default": None}


# -- a real second process over sqlite -------------------------------------------------


REPO = Path(__file__).parent.parent  # the harness the module imports lives there
EXECUTOR = """
import sys, time
sys.path[:0] = [{tests!r}, {repo!r}]
from test_cli import make_app

app = make_app({url!r})
runtime = app.extensions["openfactory"].runtime
runtime.start()
print("ready", flush=True)
try:
    sys.stdin.read()  # run until the test closes our stdin
finally:
    runtime.stop(2.0)
"""


def test_call_reaches_an_executor_in_another_process_over_sqlite(tmp_path: Path) -> None:
    pytest.importorskip("flask_openfactory.transports.sqlite")
    url = f"sqlite:///{tmp_path / 'x.db'}"
    script = tmp_path / "executor.py"
    script.write_text(textwrap.dedent(EXECUTOR.format(tests=str(Path(__file__).parent), repo=str(REPO), url=url)))
    errors = (tmp_path / "executor.err").open("w")
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=errors, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", (tmp_path / "executor.err").read_text()
        app = make_app(url)
        runner = app.test_cli_runner()
        result = ofa(runner, "call", "move_axis", "x=7", "y=8", "--json", "--timeout", "10")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["status"] == "OK" and report["result"] == {"x": 7.0, "y": 8.0}
        status = json.loads(ofa(runner, "status", "--json").stdout)
        values = {a["id"]: a["value"] for a in status["attributes"]}
        assert values["position_x"] == 7.0 and values["avail"] == "AVAILABLE"
        assert not app.extensions["openfactory"].runtime.started
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        errors.close()
