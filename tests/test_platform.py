"""A user's own app on the platform: its environment, any WSGI server, a broker away, the gateway, the logs."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from app_factory import build_app
from flask_openfactory import AssetBlueprint, ConfigurationError, SampleAttribute
from flask_openfactory.runtime import logs
from flask_openfactory.testing import OpenFactoryTester, runtime_of
from harness.gunicorn_server import GUNICORN, server_env
from harness.procfs import free_port
from harness.waiting import wait_for

pytest_plugins = ["pytester"]

PLATFORM_ENV = {
    "APP_UUID": "OVEN-7",
    "KAFKA_BROKER": "broker-1:9092,broker-2:9092",
    "KSQLDB_URL": "http://ksqldb:8088",
    "APPLICATION_VERSION": "2.1.0",
    "APPLICATION_MANUFACTURER": "ACME",
    "APPLICATION_LICENSE": "MIT",
    "OPENFACTORY_ROOT_PATH": "/oven-7",
}

# A subprocess that imports this module finds it and the harness it imports.
TESTS = Path(__file__).parent
SUBPROCESS_PATH = f"import sys; sys.path[:0] = [{str(TESTS)!r}, {str(TESTS.parent)!r}]\n"


def oven_blueprint() -> AssetBlueprint:
    bp = AssetBlueprint("oven", __name__)
    bp.attribute(SampleAttribute("temperature", tag="Temperature", default=20.0))

    @bp.ofa_method()
    def heat(setpoint: float) -> dict:
        if setpoint > 300:
            raise ValueError("set point above 300 °C")
        if setpoint < 0:
            raise RuntimeError("a bug in the method")
        return {"setpoint": setpoint}

    return bp


def make_app(**config: Any) -> Flask:
    """The oven app; imported by name by the subprocess scripts and the gunicorn app spec below."""
    return build_app(__name__, config, blueprints=[oven_blueprint()], constructor=True)


@pytest.fixture
def platform_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in PLATFORM_ENV.items():
        monkeypatch.setenv(name, value)
    return PLATFORM_ENV


@pytest.fixture(autouse=True)
def text_logs() -> Iterator[None]:
    yield
    logs.configure_format("text")  # process-wide: leave it as the other tests expect


# -- the platform's environment ---------------------------------------------------------------


def test_the_platform_environment_is_the_default(platform_env: dict[str, str]) -> None:
    app = make_app()
    runtime = runtime_of(app)
    assert runtime.asset_uuid == "OVEN-7"
    assert runtime.settings.transport_url == "kafka://broker-1:9092,broker-2:9092"
    assert runtime.settings.transport_options.ksqldb_url == "http://ksqldb:8088"
    assert (runtime.settings.application_version, runtime.settings.application_manufacturer,
            runtime.settings.application_license) == ("2.1.0", "ACME", "MIT")
    assert app.config["APPLICATION_ROOT"] == "/oven-7"
    assert app.extensions["openfactory"].warnings == []


def test_the_apps_own_settings_win_and_a_uuid_conflict_is_said(platform_env: dict[str, str]) -> None:
    app = make_app(OPENFACTORY_APP_UUID="OVEN-LOCAL", OPENFACTORY_TRANSPORT_URL="memory://own-settings",
                   OPENFACTORY_APPLICATION_VERSION="0.0.1")
    runtime = runtime_of(app)
    assert (runtime.asset_uuid, runtime.settings.transport_url) == ("OVEN-LOCAL", "memory://own-settings")
    assert runtime.settings.application_version == "0.0.1"
    (warning,) = app.extensions["openfactory"].warnings
    assert "'OVEN-LOCAL'" in warning and "'OVEN-7' (APP_UUID)" in warning
    status = app.test_cli_runner().invoke(args=["ofa", "status"])
    assert status.exit_code == 0, status.output
    assert f"warning:   {warning}" in status.output.splitlines()


def test_without_the_platform_the_embedded_sqlite_log_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PLATFORM_ENV:
        monkeypatch.delenv(name, raising=False)
    app = make_app()
    assert runtime_of(app).settings.transport_url.startswith("sqlite:///")
    assert runtime_of(app).asset_uuid == "DEV-UUID"


@pytest.mark.parametrize(("url", "text"), [
    ("kafka://", "names no broker"),
    ("kafka://broker", "'broker' is not host:port"),
    ("sqlite:///{file}/sub/db.sqlite3", "is not a directory"),
])
def test_a_transport_url_that_can_never_work_fails_in_init_app(tmp_path: Path, url: str, text: str) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(ConfigurationError, match=f"^OPENFACTORY_TRANSPORT_URL: .*{text}"):
        make_app(OPENFACTORY_TRANSPORT_URL=url.format(file=a_file))


def test_a_bad_log_format_fails_in_init_app() -> None:
    with pytest.raises(ConfigurationError, match="OPENFACTORY_LOG_FORMAT must be 'text' or 'json'"):
        make_app(OPENFACTORY_TRANSPORT_URL="memory://", OPENFACTORY_LOG_FORMAT="yaml")


# -- any WSGI server: the first request of any kind starts the runtime --------------------------


def test_the_health_probe_starts_the_runtime_and_the_log_says_how_to_start_at_boot(
        caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(OPENFACTORY_TRANSPORT_URL="memory://first-probe", OPENFACTORY_APP_UUID="PROBED")
    runtime = runtime_of(app)
    client = app.test_client()
    try:
        with caplog.at_level(logging.WARNING, logger="flask_openfactory"):
            assert client.get("/ofa/health").status_code == 200
            wait_for(lambda: runtime.started, 5, "the runtime started by the health probe")
            assert client.get("/ofa/ready").status_code == 200
            assert client.get("/ofa/health").status_code == 200
        lines = [r.getMessage() for r in caplog.records if "first request" in r.getMessage()]
        assert len(lines) == 1 and "GET /ofa/health" in lines[0] and "to start at boot" in lines[0]
    finally:
        runtime.stop()


def test_a_stop_right_after_the_first_request_started_the_runtime_is_final(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A gunicorn worker told to exit (SIGTERM) just as its first request's start returns: the
    # exit's stop() must not be undone by the starter, which once started the runtime again
    # and left the stopping worker executing commands, its avail=UNAVAILABLE never written.
    app = make_app(OPENFACTORY_TRANSPORT_URL="memory://stop-after-start", OPENFACTORY_APP_UUID="STOPPED")
    runtime = runtime_of(app)
    starts: list[int] = []
    start = runtime.start

    def start_then_stopped(**kwargs: Any) -> None:
        start(**kwargs)
        starts.append(1)
        if len(starts) == 1:
            runtime.stop(2.0)  # the process exits before the starter's thread looks again

    monkeypatch.setattr(runtime, "start", start_then_stopped)
    try:
        assert app.test_client().get("/ofa/health").status_code == 200
        starter = app.extensions["openfactory"].starter._thread  # this app's starter, not another test's
        starter.join(10)
        assert not starter.is_alive(), "the starter's thread did not end"
        assert (len(starts), runtime.started, runtime.stopped) == (1, False, True)
    finally:
        runtime.stop(2.0)


def test_a_request_while_the_runtime_stops_or_after_does_not_start_it_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A keep-alive request that reaches a worker while its exit's stop() runs (or a request thread
    # still alive at interpreter exit) once found the runtime not started and started it again:
    # the stopping process went back to following the log and executing commands.
    app = make_app(OPENFACTORY_TRANSPORT_URL="memory://request-while-stopping", OPENFACTORY_APP_UUID="STOPPING")
    runtime = runtime_of(app)
    client = app.test_client()
    starts: list[int] = []
    start = runtime.start

    def counted_start(**kwargs: Any) -> None:
        starts.append(1)
        start(**kwargs)

    monkeypatch.setattr(runtime, "start", counted_start)
    during: list[tuple[int, int, str]] = []
    background_stop = runtime._background.stop

    def requests_during_stop(timeout: float) -> None:  # inside stop(), once the runtime is no longer started
        for path in ("/ofa/health", "/ofa/attributes"):
            answer = client.get(path)
            body = answer.get_json()
            during.append((answer.status_code, len(starts), body.get("message", "") if isinstance(body, dict) else ""))
        background_stop(timeout)

    try:
        assert client.get("/ofa/health").status_code == 200
        wait_for(lambda: runtime.started, 5, "the runtime started by the first request")
        monkeypatch.setattr(runtime._background, "stop", requests_during_stop)
        runtime.stop(2.0)
        after = client.get("/ofa/attributes")
        assert [(code, count) for code, count, _ in during] == [(200, 1), (503, 1)]
        assert "was stopped in this process" in during[1][2] and after.headers["Retry-After"]
        assert (after.status_code, len(starts), runtime.started, runtime.stopped) == (503, 1, False, True)
        runtime.start()  # an explicit start still starts it, and requests are served again
        assert client.get("/ofa/attributes").status_code == 200
    finally:
        runtime.stop(2.0)


def test_without_hooks_avail_is_unavailable_after_the_process_exits(tmp_path: Path) -> None:
    """``flask run``, waitress…: the runtime started on a request stops at exit and says so."""
    db = tmp_path / "log.sqlite3"
    script = (
        f"{SUBPROCESS_PATH}"
        "from test_platform import make_app\n"
        f"app = make_app(OPENFACTORY_TRANSPORT_URL='sqlite:///{db}', OPENFACTORY_APP_UUID='ATEXIT')\n"
        "app.test_client().get('/ofa/attributes')\n"
        "from flask_openfactory.testing import runtime_of\n"
        "assert runtime_of(app).started\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    app = make_app(OPENFACTORY_TRANSPORT_URL=f"sqlite:///{db}", OPENFACTORY_APP_UUID="ATEXIT")
    with app.app_context():
        assert runtime_of(app).get("avail").value == "UNAVAILABLE"  # type: ignore[union-attr]


# -- a broker that is away: transient ---------------------------------------------------------


def serve_with_hooks(tmp_path: Path, env: dict[str, str], *, workers: int,
                     **config: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    """``make_app(**config)`` under gunicorn with the extension's config module; its log in a file."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "platformapp.py").write_text(
        f"{SUBPROCESS_PATH}from test_platform import make_app\n")
    port = free_port()
    log = tmp_path / "gunicorn.log"
    call = "platformapp:make_app({})".format(", ".join(f"{k}={v!r}" for k, v in config.items()))
    with open(log, "ab") as out:
        proc = subprocess.Popen([GUNICORN, "--no-control-socket", "-b", f"127.0.0.1:{port}", "-w", str(workers),
                                 "-c", "python:flask_openfactory.gunicorn_conf", call],
                                cwd=app_dir, env=server_env(env), stdout=out, stderr=subprocess.STDOUT)
    return proc, port, log


@pytest.mark.gunicorn
def test_with_the_broker_away_the_api_answers_at_once_and_never_500(tmp_path: Path) -> None:
    """gunicorn with the hooks, KAFKA_BROKER on a port nobody listens on."""
    proc, port, log = serve_with_hooks(tmp_path, {"KAFKA_BROKER": f"127.0.0.1:{free_port()}", "APP_UUID": "OVEN-AWAY"},
                                       workers=1)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answer(base + "/ofa/health"), 30, "the worker serving")
        timings = []
        for _ in range(2):
            for method, path in [("GET", "/ofa/health"), ("GET", "/ofa/ready"), ("GET", "/ofa/attributes"),
                                 ("GET", "/ofa/attributes/temperature"), ("POST", "/ofa/methods/heat")]:
                started = time.monotonic()
                answer = requests.request(method, base + path, json={"setpoint": 1} if method == "POST" else None,
                                          timeout=30)
                timings.append((path, answer.status_code, (time.monotonic() - started) * 1000))
        print("\n".join(f"{path:30s} {code} {ms:8.1f} ms" for path, code, ms in timings))
        assert [code for _, code, _ in timings] == [200, 503, 503, 503, 503] * 2
        wait_for(lambda: "could not start (" in log.read_text(errors="replace"), 60, "the failed start logged")
        ready = requests.get(base + "/ofa/ready", timeout=30).json()
        assert ready["checks"]["runtime"]["ok"] is False and "KafkaException" in ready["checks"]["runtime"]["detail"]
    finally:
        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        stopped_after = time.monotonic() - stopping
    text = log.read_text(errors="replace")
    assert "retrying in 1s" in text and "Traceback" not in text
    print(f"exit {proc.returncode} {stopped_after:.2f} s after SIGTERM")
    assert proc.returncode == 0 and stopped_after < 10.0  # Docker's and Swarm's stop grace period


def _answer(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


# -- the platform's gateway ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ofa/docs", "/oven-7/ofa/docs"], ids=["prefix-stripped", "prefix-kept"])
def test_docs_link_under_the_root_path_whether_or_not_the_gateway_strips_it(
        monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    monkeypatch.setenv("OPENFACTORY_ROOT_PATH", "/oven-7")
    app = make_app(OPENFACTORY_TRANSPORT_URL="memory://root-path", OPENFACTORY_START_ON_REQUEST=False)
    client = app.test_client()
    server = "http://localhost"  # as a server passes it: no SCRIPT_NAME (the test client would use APPLICATION_ROOT)
    page = client.get(path, base_url=server)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "/oven-7/ofa/docs/static/swagger-ui-bundle.js" in html and "/oven-7/ofa/openapi.json" in html
    with client.get(path.replace("/docs", "/docs/static/swagger-ui-bundle.js"), base_url=server) as script:
        assert script.status_code == 200
    assert client.get("/ofa/openapi.json", base_url=server).json["servers"] == [{"url": "/oven-7"}]


def test_x_forwarded_prefix_wins_over_the_root_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENFACTORY_ROOT_PATH", "/oven-7")
    app = make_app(OPENFACTORY_TRANSPORT_URL="memory://forwarded", OPENFACTORY_START_ON_REQUEST=False)
    client = app.test_client()
    html = client.get("/ofa/docs", base_url="http://localhost",
                      headers={"X-Forwarded-Prefix": "/gw"}).get_data(as_text=True)
    assert "/gw/ofa/openapi.json" in html and "/oven-7" not in html


# -- logs ------------------------------------------------------------------------------------------


def test_an_expected_method_error_is_one_warning_line_and_a_bug_an_error_with_its_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(OPENFACTORY_TRANSPORT_URL="memory://method-errors")
    with caplog.at_level(logging.DEBUG, logger="flask_openfactory"), OpenFactoryTester(app) as ofa:
        assert ofa.call("heat", setpoint=400).status == "ERROR"
        assert ofa.call("heat", setpoint=-1).status == "ERROR"
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "heat" in r.getMessage()]
    assert len(warned) == 1 and warned[0].exc_info is None
    assert "answered ERROR: ValueError: set point above 300 °C" in warned[0].getMessage()
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    assert len(debug) == 1
    (bug,) = [r for r in caplog.records if r.levelno == logging.ERROR and "heat" in r.getMessage()]
    assert bug.exc_info is not None and "RuntimeError" in bug.getMessage()


def test_lifecycle_lines_name_the_asset_and_the_pid_once(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(OPENFACTORY_TRANSPORT_URL="memory://lifecycle", OPENFACTORY_APP_UUID="LIFE")
    with caplog.at_level(logging.INFO, logger="flask_openfactory"), OpenFactoryTester(app):
        pass
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("flask_openfactory")]
    prefix = f"[LIFE pid {os.getpid()}] "
    for event in ("started on memory://lifecycle", "executing commands here", "handed over", "stopped"):
        assert sum(line.startswith(prefix + event) for line in lines) == 1, (event, lines)
    assert all(line.count(str(os.getpid())) == 1 for line in lines if line.startswith(prefix))


def test_json_log_format_is_one_object_per_line(tmp_path: Path) -> None:
    script = (
        f"{SUBPROCESS_PATH}"
        "from test_platform import make_app\n"
        "from flask_openfactory.testing import OpenFactoryTester\n"
        "app = make_app(OPENFACTORY_TRANSPORT_URL='memory://json', OPENFACTORY_APP_UUID='JSON-1',"
        " OPENFACTORY_LOG_FORMAT='json')\n"
        "with OpenFactoryTester(app) as ofa:\n"
        "    ofa.call('heat', setpoint=-1)\n"
    )
    err = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         timeout=60).stderr
    entries = [json.loads(line) for line in err.splitlines()]  # every line is one JSON object
    messages = [e["message"] for e in entries]
    assert "started on memory://json" in messages and "stopped" in messages
    assert all(e["asset_uuid"] == "JSON-1" and e["pid"] > 0 for e in entries if e["logger"] != "flask_openfactory")
    (bug,) = [e for e in entries if e["level"] == "ERROR"]
    assert "RuntimeError: a bug in the method" in bug["traceback"]


@pytest.mark.gunicorn
def test_json_logs_under_gunicorn_are_one_object_per_line_master_included(tmp_path: Path) -> None:
    proc, port, log = serve_with_hooks(tmp_path, {"OPENFACTORY_LOG_FORMAT": "json", "APP_UUID": "JSON-2"}, workers=2,
                                       OPENFACTORY_TRANSPORT_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        wait_for(lambda: "executing commands here" in log.read_text(errors="replace"), 30, "a worker executing")
        requests.post(f"http://127.0.0.1:{port}/ofa/methods/heat", json={"setpoint": 400}, timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    entries = [json.loads(line) for line in log.read_text().splitlines()]  # every line is one JSON object
    messages = [e["message"] for e in entries]
    assert any(m.startswith("Starting gunicorn") for m in messages)  # the master's own lines too
    assert any("answered ERROR: ValueError" in m for m in messages)
    assert "executing commands here" in messages and "stopped" in messages
    assert all(e.get("asset_uuid") == "JSON-2" for e in entries if e["logger"].startswith("flask_openfactory."))


def test_the_plugin_refuses_an_app_whose_factory_used_its_log(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(eager="""
        from flask import Flask
        from flask_openfactory import FlaskOpenFactory

        def create_app():
            app = Flask(__name__)
            app.config["OPENFACTORY_TRANSPORT_URL"] = "sqlite:///" + __file__ + ".sqlite3"
            ofa = FlaskOpenFactory(app)
            ofa.runtime(app).transport  # opened in the factory: too late to isolate the tests
            return app
    """)
    pytester.makefile(".ini", pytest="[pytest]\nopenfactory_app = eager:create_app\n")
    pytester.makepyfile(test_eager="def test_it(ofa):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the factory used the asset's log*memory:// transport in the testing config*"])
