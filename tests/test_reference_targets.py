"""Calling an app of the reference SDK, which writes no ``_RESULT``: sent, reported at once.

The target is told apart by what it advertises and has written (its library
metadata, untyped method contracts, no result ever); to one of ours the caller
still waits for the result, and to an asset nothing is known of it waits too.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
from click.testing import Result
from flask import Flask

from app_factory import build_app
from flask_openfactory import ofa_method
from flask_openfactory.runtime import AssetRuntime, RuntimeSettings
from flask_openfactory.transports import TransportOptions
from flask_openfactory.wire.answering import answers_with_results
from flask_openfactory.wire.methods import spec_of
from flask_openfactory.wire.protocol import Record
from kafka_config import KAFKA_TEST_CONFIG
from ksqldb_standin import running_standin
from reference_app import publish_reference_app, reference_records

REF = "REF-APP"


@ofa_method()
def move_axis(x: float, y: float) -> float:
    return x + y


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"memory://ref-{uuid.uuid4()}" if request.param == "memory" else f"sqlite:///{tmp_path}/r.db"


def caller(url: str, options: TransportOptions | None = None) -> AssetRuntime:
    return AssetRuntime(RuntimeSettings(asset_uuid="HMI", transport_url=url,
                                        transport_options=options or TransportOptions()))


def ours(url: str, asset_uuid: str = "OURS") -> AssetRuntime:
    runtime = AssetRuntime(RuntimeSettings(asset_uuid=asset_uuid, transport_url=url))
    runtime.declare_method(spec_of(move_axis))
    return runtime


def commands_on(runtime: AssetRuntime, asset_uuid: str) -> list[Record]:
    return [r for r in runtime.transport.snapshot(asset_uuid).values() if r.id.endswith("_CMD")]


def test_the_verdict_comes_from_what_the_asset_advertises_and_wrote() -> None:
    ref = {r.id: r for r in reference_records(REF, {"move_axis": ["x"]})}
    methods = {rid: r.value for rid, r in ref.items() if r.type == "Method"}
    assert answers_with_results(ref, methods, library_manufacturer="us") is False
    assert answers_with_results({}, {}, library_manufacturer="us") is None  # unknown: wait, it may start
    typed = {"move_axis": json.dumps({"description": "", "arguments": [{"name": "x", "description": "",
                                                                          "type": "float"}]})}
    assert answers_with_results(ref, typed, library_manufacturer="us") is True
    result = Record.create(REF, "move_axis_RESULT", "{}", tag="Method.Result", type="OpenFactory")
    assert answers_with_results({**ref, result.id: result}, methods, library_manufacturer="us") is True
    assert answers_with_results(ref, {}, library_manufacturer="OpenFactoryIO") is True


def test_call_to_a_reference_app_is_sent_and_reported_at_once(url: str) -> None:
    hmi = caller(url)
    publish_reference_app(hmi.transport, REF)
    started = time.monotonic()
    result = hmi.asset(REF).call("move_axis", x=1, y=2, wait=30.0)
    elapsed = time.monotonic() - started
    assert result.status == "SENT_NO_RESULT" and result.correlation_id
    assert elapsed < 5.0, elapsed  # not the 30 s wait (the figure is in the report, not a threshold)
    sent = commands_on(hmi, REF)
    assert [r.id for r in sent] == ["move_axis_CMD"]
    assert json.loads(sent[0].value)["header"]["correlation_id"] == result.correlation_id
    hmi.stop(2.0)


def test_call_to_one_of_ours_still_waits_for_the_result(url: str) -> None:
    target = ours(url)
    target.start()
    try:
        result = caller(url).asset("OURS").call("move_axis", x=1, y=2)
        assert (result.status, result.result) == ("OK", 3.0)
    finally:
        target.stop(2.0)


def test_call_to_an_unknown_asset_still_waits() -> None:
    with pytest.raises(TimeoutError, match="no move_axis_RESULT"):
        caller(f"memory://ref-{uuid.uuid4()}").asset("NOBODY").call("move_axis", x=1, y=2, wait=0.3)


# -- flask ofa call --------------------------------------------------------------------


def cli_app(url: str, **config: object) -> Flask:
    return build_app(__name__, {"TESTING": True, "OPENFACTORY_APP_UUID": "HMI", "OPENFACTORY_TRANSPORT_URL": url,
                                "OPENFACTORY_KSQLDB_URL": None, "OPENFACTORY_STOP_TIMEOUT": 2.0, **config},
                     add_api=False)


def timed_call(app: Flask, target: str, what: str) -> tuple[Result, float]:
    """``flask ofa call move_axis x=1 y=2 --target <target> --timeout 30``: its result and seconds."""
    started = time.monotonic()
    result = app.test_cli_runner().invoke(args=["ofa", "call", "move_axis", "x=1", "y=2", "--target", target,
                                                "--timeout", "30"])
    elapsed = time.monotonic() - started
    print(f"flask ofa call {what}: exit {result.exit_code} in {elapsed * 1000:.0f} ms")
    return result, elapsed


def test_flask_ofa_call_to_a_reference_app_exits_6_at_once(url: str) -> None:
    app = cli_app(url)
    publish_reference_app(app.extensions["openfactory"].runtime.transport, REF)
    result, elapsed = timed_call(app, REF, "to a reference app")
    assert result.exit_code == 6, result.output
    assert result.stdout.startswith(f"SENT_NO_RESULT move_axis on {REF}: sent; this asset does not answer with results")
    assert elapsed < 5.0
    report = json.loads(app.test_cli_runner().invoke(
        args=["ofa", "call", "move_axis", "x=3", "y=4", "--target", REF, "--json"]).stdout)
    assert report["status"] == "SENT_NO_RESULT" and report["arguments"] == {"x": "3", "y": "4"}


def test_flask_ofa_call_to_one_of_ours_still_waits(url: str) -> None:
    target = ours(url)
    target.start()
    try:
        result = cli_app(url).test_cli_runner().invoke(
            args=["ofa", "call", "move_axis", "x=1", "y=2", "--target", "OURS", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["result"] == 3.0
    finally:
        target.stop(2.0)


@pytest.fixture
def kafka_platform(kafka_broker, unique_topic: str) -> Iterator[tuple[str, object]]:  # type: ignore[no-untyped-def]
    kafka_broker.create_topic(unique_topic, 3)
    with running_standin(unique_topic) as standin:
        yield "kafka://" + kafka_broker.bootstrap, standin


def test_on_kafka_a_reference_app_seen_through_ksqldb_is_not_waited_for(kafka_platform, unique_topic) -> None:  # type: ignore[no-untyped-def]
    url, standin = kafka_platform
    ref_uuid = f"REF-{uuid.uuid4().hex[:8].upper()}"
    for record in reference_records(ref_uuid, {"move_axis": ["x", "y"]}):
        standin.set_attribute(ref_uuid, record.id, record.value, type=record.type, tag=record.tag,
                              timestamp=record.timestamp)
    app = cli_app(url, OPENFACTORY_KSQLDB_URL=standin.url, OPENFACTORY_ASSETS_TOPIC=unique_topic,
                  OPENFACTORY_KAFKA_CONFIG=dict(KAFKA_TEST_CONFIG))
    result, elapsed = timed_call(app, ref_uuid, "over Kafka + ksqlDB to a reference app")
    assert result.exit_code == 6, result.output
    assert elapsed < 10.0
    assert f"asset_uuid='{ref_uuid}'" in " ".join(standin.statements("/query"))
