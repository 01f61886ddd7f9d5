"""GET /ofa/metrics: Prometheus text that parses, with the runtime's numbers, per app.

Commands go through the asset's log (``send_command``) exactly as another
asset would send them; the runtime counts results as it follows the log, so
every check waits for the numbers rather than sleeping.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from app_factory import build_app
from flask_openfactory import AssetBlueprint
from flask_openfactory.metrics import DURATION_BUCKETS, OTHER_METHOD, MethodResults
from flask_openfactory.runtime import AssetRuntime
from flask_openfactory.testing import runtime_of
from flask_openfactory.transports.base import Health
from flask_openfactory.transports.memory import MemoryTransport
from flask_openfactory.wire.protocol import Record
from harness.waiting import wait_for

ASSET = "METRICS-ASSET"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def machine_blueprint() -> AssetBlueprint:
    bp = AssetBlueprint("machine", __name__)

    @bp.ofa_method()
    def home() -> str:
        return "homed"

    @bp.ofa_method()
    def explode() -> None:
        raise RuntimeError("spindle jammed")

    @bp.ofa_method()
    def slow() -> str:
        time.sleep(0.06)
        return "done"

    @bp.ofa_method()
    def move(x: float) -> float:
        return x

    return bp


def make_app(transport_url: str | None = None, asset: str = ASSET, **config: Any) -> Flask:
    return build_app(
        __name__,
        {
            "TESTING": True,
            "OPENFACTORY_TRANSPORT_URL": transport_url or f"memory://test-metrics-{uuid.uuid4().hex}",
            "OPENFACTORY_APP_UUID": asset,
            "OPENFACTORY_STOP_TIMEOUT": 2.0,
            **config,
        },
        blueprints=[machine_blueprint()],
    )


@pytest.fixture
def build() -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def build(*args: Any, start: bool = True, **config: Any) -> Flask:
        app = make_app(*args, **config)
        apps.append(app)
        if start:
            runtime_of(app).start()
        return app

    yield build
    for app in reversed(apps):
        runtime_of(app).stop(timeout=2.0)


def scrape(client: FlaskClient) -> Samples:
    """Every sample, keyed by (sample name, labels); the text must parse."""
    response = client.get("/ofa/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]




def results_seen(runtime: AssetRuntime) -> int:
    return sum(runtime.method_results.snapshot().counts.values())


def run_commands(runtime: AssetRuntime) -> None:
    """2 OK, 1 ERROR, 1 slow OK, 2 REJECTED (unknown method, bad argument), via the log."""
    before = results_seen(runtime)
    for method, arguments, status in (
        ("home", {}, "OK"),
        ("home", {}, "OK"),
        ("explode", {}, "ERROR"),
        ("slow", {}, "OK"),
        ("no_such_method", {}, "REJECTED"),
        ("move", {"x": "not a number"}, "REJECTED"),
    ):
        _, result = runtime.send_command(ASSET, method, arguments, wait=5)
        assert result is not None and result.status == status, (method, result)
    wait_for(lambda: results_seen(runtime) >= before + 6, what="the results on the follower")


# -- the numbers -----------------------------------------------------------------------------


def test_metrics_after_commands_and_an_http_call(build: Callable[..., Flask]) -> None:
    app = build()
    runtime = runtime_of(app)
    client = app.test_client()
    run_commands(runtime)
    assert client.post("/ofa/methods/move", json={"x": 2.0}).get_json()["status"] == "OK"
    wait_for(lambda: results_seen(runtime) >= 7, what="the HTTP result on the follower")
    samples = scrape(client)

    # commands by method and status (the asset's log: commands and HTTP calls)
    results = "openfactory_method_results_total"
    assert value(samples, results, method="home", status="OK") == 2
    assert value(samples, results, method="home", status="ERROR") == 0  # declared methods start at zero
    assert value(samples, results, method="explode", status="ERROR") == 1
    assert value(samples, results, method="slow", status="OK") == 1
    assert value(samples, results, method="move", status="REJECTED") == 1
    assert value(samples, results, method="move", status="OK") == 1
    assert value(samples, results, method=OTHER_METHOD, status="REJECTED") == 1  # the unknown method

    # duration histogram per method: REJECTED never ran, so has no duration
    hist = "openfactory_method_duration_seconds"
    assert value(samples, f"{hist}_count", method="home") == 2
    assert value(samples, f"{hist}_bucket", method="slow", le="0.05") == 0
    assert value(samples, f"{hist}_bucket", method="slow", le="0.1") == 1
    assert value(samples, f"{hist}_bucket", method="slow", le="+Inf") == 1
    assert 0.06 <= value(samples, f"{hist}_sum", method="slow") < 1.0
    assert value(samples, f"{hist}_count", method="move") == 1  # the HTTP call
    assert (f"{hist}_count", frozenset({("method", OTHER_METHOD)})) not in samples

    # this process as the executor
    # the HTTP call went through the log: the executor received and answered it as a command
    assert value(samples, "openfactory_commands_received_total") == 7
    assert value(samples, "openfactory_commands_answered_total", status="ok") == 4
    assert value(samples, "openfactory_commands_answered_total", status="error") == 1
    assert value(samples, "openfactory_commands_answered_total", status="rejected") == 2
    assert value(samples, "openfactory_commands_rejected_total", reason="unknown_method") == 1
    assert value(samples, "openfactory_commands_rejected_total", reason="bad_arguments") == 1
    assert value(samples, "openfactory_http_calls_total", status="ok") == 1
    assert value(samples, "openfactory_records_skipped_total", reason="malformed") == 0
    assert value(samples, "openfactory_records_published_total") >= 10  # identity, methods, 1 result
    assert value(samples, "openfactory_delivery_failures_total") == 0

    # consumer position and ownership
    assert value(samples, "openfactory_command_executor") == 1
    assert value(samples, "openfactory_command_dispatcher_up") == 1
    assert value(samples, "openfactory_command_position") > 0
    assert value(samples, "openfactory_command_recoveries_total") >= 1

    # broker connectivity and readiness, with since when
    assert value(samples, "openfactory_ready") == 1
    assert value(samples, "openfactory_transport_up") == 1
    for check in ("runtime", "transport", "commands"):
        assert value(samples, "openfactory_check_ok", check=check) == 1
        since = value(samples, "openfactory_check_since_timestamp_seconds", check=check)
        assert time.time() - 60 < since <= time.time()
    assert value(samples, "openfactory_transport_since_timestamp_seconds") == value(
        samples, "openfactory_check_since_timestamp_seconds", check="transport")
    assert value(samples, "openfactory_asset_info", asset_uuid=ASSET, application_version="latest",
                 transport="memory") == 1
    assert value(samples, "openfactory_transport_stat", stat="published") > 0


def test_two_apps_in_one_process_have_independent_metrics(build: Callable[..., Flask]) -> None:
    busy = build()
    idle = build(asset="METRICS-IDLE")
    run_commands(runtime_of(busy))
    busy_samples, idle_samples = scrape(busy.test_client()), scrape(idle.test_client())
    assert value(busy_samples, "openfactory_method_results_total", method="home", status="OK") == 2
    assert value(idle_samples, "openfactory_method_results_total", method="home", status="OK") == 0
    assert value(busy_samples, "openfactory_commands_received_total") == 6
    assert value(idle_samples, "openfactory_commands_received_total") == 0
    assert ("openfactory_asset_info", frozenset({("asset_uuid", "METRICS-IDLE"), ("application_version", "latest"),
                                                 ("transport", "memory")})) in idle_samples
    assert (busy.extensions["openfactory"].api.metrics.registry
            is not idle.extensions["openfactory"].api.metrics.registry)


def test_a_standby_process_reports_the_same_asset_results(build: Callable[..., Flask]) -> None:
    """Any gunicorn worker a scrape lands on shows the asset's results; ownership tells them apart."""
    executor = build()
    standby = build(executor.config["OPENFACTORY_TRANSPORT_URL"])
    run_commands(runtime_of(executor))
    wait_for(lambda: results_seen(runtime_of(standby)) >= 6, what="the standby following the results")
    a, b = scrape(executor.test_client()), scrape(standby.test_client())
    for method, status in (("home", "OK"), ("explode", "ERROR"), (OTHER_METHOD, "REJECTED")):
        assert value(a, "openfactory_method_results_total", method=method, status=status) == value(
            b, "openfactory_method_results_total", method=method, status=status)
    assert value(a, "openfactory_command_executor") == 1 and value(b, "openfactory_command_executor") == 0
    assert value(b, "openfactory_commands_received_total") == 0
    assert value(b, "openfactory_ready") == 1  # standing by is ready


def test_result_labels_stay_bounded_and_bad_results_do_not_stop_the_follower(build: Callable[..., Flask]) -> None:
    app = build()
    runtime = runtime_of(app)
    transport = runtime.transport
    for i in range(50):  # anyone may write to the log: random method names
        transport.publish(Record.create(ASSET, f"random{i}_RESULT", '{"status":"OK","duration_ms":1}',
                                        tag="Method.Result", type="OpenFactory"))
    for junk in ("not json", '{"status":"OK","duration_ms":[1]}', '{"status":"MAYBE"}', '{"status":"OK",'
                 '"duration_ms":"NaN"}'):
        transport.publish(Record.create(ASSET, "home_RESULT", junk, tag="Method.Result", type="OpenFactory"))
    wait_for(lambda: results_seen(runtime) >= 50, what="the random results")
    _, result = runtime.send_command(ASSET, "home", wait=5)
    assert result is not None and result.status == "OK"
    wait_for(lambda: runtime.method_results.snapshot().counts.get(("home", "OK"), 0) >= 1, what="home counted")
    samples = scrape(app.test_client())
    methods = {dict(labels)["method"] for (name, labels) in samples if name == "openfactory_method_results_total"}
    assert methods == {"home", "explode", "slow", "move", OTHER_METHOD}
    assert value(samples, "openfactory_method_results_total", method=OTHER_METHOD, status="OK") == 50
    assert samples.get(("openfactory_runtime_events_total", frozenset({("event", "follow_errors")})), 0) == 0
    assert runtime.follower_state().alive


def test_method_results_histogram_unit() -> None:
    stats = MethodResults()
    known = {"a"}
    stats.observe("a", "OK", 5.0, known)  # 5 ms: exactly on the 0.005 s bound (le is inclusive)
    stats.observe("a", "ERROR", 70_000.0, known)
    stats.observe("a", "REJECTED", 0.0, known)
    stats.observe("a", "OK", float("nan"), known)
    stats.observe("b", "WHATEVER", 1.0, known)
    data = stats.snapshot()
    assert data.counts == {("a", "OK"): 2, ("a", "ERROR"): 1, ("a", "REJECTED"): 1, (OTHER_METHOD, "OTHER"): 1}
    histogram = data.durations["a"]
    assert histogram.count == 2 and histogram.buckets[0] == 1
    assert histogram.buckets[DURATION_BUCKETS.index(300.0)] == 1
    assert histogram.total == pytest.approx(70.005)


# -- the route -------------------------------------------------------------------------------


def test_openmetrics_when_asked_for(build: Callable[..., Flask]) -> None:
    client = build().test_client()
    response = client.get("/ofa/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status_code == 200
    assert response.content_type.startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).endswith("# EOF\n")


def test_scraping_a_runtime_that_never_started_creates_no_transport(
    build: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = build(start=False, OPENFACTORY_START_ON_REQUEST=False)

    def no_transport(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a scrape must not connect")

    monkeypatch.setattr("flask_openfactory.runtime.core.create_transport", no_transport)
    samples = scrape(app.test_client())
    assert value(samples, "openfactory_ready") == 0
    assert value(samples, "openfactory_transport_up") == 0
    assert value(samples, "openfactory_check_ok", check="runtime") == 0
    assert ("openfactory_command_executor", frozenset()) not in samples


def test_without_prometheus_client_metrics_is_a_json_404(
    build: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails, as without the extra
    client = build().test_client()
    response = client.get("/ofa/metrics")
    assert response.status_code == 404 and response.mimetype == "application/json"
    assert "pip install 'flask-openfactory[metrics]'" in response.get_json()["message"]
    assert client.get("/ofa/ready").status_code == 200


def test_prometheus_client_is_loaded_at_the_first_scrape_not_at_boot() -> None:
    # Every gunicorn worker builds and starts the app; most are never scraped.
    code = ("import sys; from demo import create_app; app = create_app('testing'); "
            "app.extensions['openfactory'].runtime.start(); booted = 'prometheus_client' in sys.modules; "
            "status = app.test_client().get('/ofa/metrics').status_code; "
            "print(booted, status, 'prometheus_client' in sys.modules); "
            "app.extensions['openfactory'].runtime.stop(2.0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout
    assert out.split() == ["False", "200", "True"]


@pytest.mark.parametrize("accept", [None, "text/plain", "text/plain; version=1.0.0", "application/openmetrics-text",
                                    "application/openmetrics-text; version=1.0.0", "application/json", "*/*"])
def test_metrics_is_documented_with_the_content_type_it_answers(build: Callable[..., Flask],
                                                                accept: str | None) -> None:
    client = build().test_client()
    operation = client.get("/ofa/openapi.json").get_json()["paths"]["/ofa/metrics"]["get"]
    assert operation["tags"] == ["asset"]
    documented = operation["responses"]["200"]["content"]
    assert set(documented) == {"text/plain", "application/openmetrics-text"}
    response = client.get("/ofa/metrics", headers={"Accept": accept} if accept else {})
    assert response.status_code == 200
    assert response.mimetype in documented


# -- readiness: which dependency, since when ----------------------------------------------------


def test_ready_says_which_check_fails_and_since_when(
    build: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = build()
    client = app.test_client()
    down_at = time.time() - 120  # the transport's own tracker knows when it went down
    monkeypatch.setattr(MemoryTransport, "health", lambda self: Health(False, "broker gone", down_at))
    body = client.get("/ofa/ready").get_json()
    assert body["ready"] is False
    failing = {name for name, check in body["checks"].items() if not check["ok"]}
    assert failing == {"transport"}
    assert body["checks"]["transport"]["detail"] == "broker gone"
    assert body["checks"]["transport"]["since"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(down_at))

    # a source with no memory of its own (a fresh Health per call): the first sighting stays
    monkeypatch.setattr(MemoryTransport, "health", lambda self: Health(True, "back"))
    first = runtime_of(app).health_checks()["transport"]
    time.sleep(1.1)
    again = runtime_of(app).health_checks()["transport"]
    assert first.ok and again.since == first.since
    assert client.get("/ofa/ready").status_code == 200
