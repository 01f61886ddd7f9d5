"""UUIDs the platform cannot route to reference clients: warned at start, in `flask ofa status`."""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from app_factory import build_app
from flask_openfactory.runtime import AssetRuntime, RuntimeSettings
from flask_openfactory.wire.routing import routing_warnings


@pytest.mark.parametrize("asset_uuid, expected", [
    ("DEMO-MACHINE", []),
    ("PROVER3018", []),
    ("ASSET_FORWARDER", []),
    ("demo-machine", ["not upper case", "'DEMO-MACHINE.*'", "name it 'DEMO-MACHINE'"]),
    ("Oven-1", ["not upper case"]),
    ("OVEN\r1", ["U+000D", "cannot carry"]),
    ("OVEN\x001", ["U+0000"]),
    ("OVEN\u00a01", ["U+00A0"]),
])
def test_routing_warnings(asset_uuid: str, expected: list[str]) -> None:
    text = " | ".join(routing_warnings(asset_uuid))
    assert (text == "") == (expected == [])
    for part in expected:
        assert part in text


def test_a_lower_case_uuid_is_a_warning_at_start(caplog: pytest.LogCaptureFixture) -> None:
    runtime = AssetRuntime(RuntimeSettings(asset_uuid="demo-machine", transport_url=f"memory://r-{uuid.uuid4()}"))
    with caplog.at_level(logging.WARNING, logger="flask_openfactory"):
        runtime.start()
    runtime.stop(2.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'demo-machine' is not upper case" in w for w in warnings), warnings


def test_an_upper_case_uuid_starts_without_warning(caplog: pytest.LogCaptureFixture) -> None:
    runtime = AssetRuntime(RuntimeSettings(asset_uuid="DEMO-MACHINE", transport_url=f"memory://r-{uuid.uuid4()}"))
    with caplog.at_level(logging.WARNING, logger="flask_openfactory"):
        runtime.start()
    runtime.stop(2.0)
    assert not [r for r in caplog.records if "upper case" in r.getMessage()]


@pytest.mark.parametrize("asset_uuid, warned", [("demo-machine", True), ("DEMO-MACHINE", False)])
def test_flask_ofa_status_shows_the_warning(asset_uuid: str, warned: bool) -> None:
    app = build_app(__name__, {"TESTING": True, "OPENFACTORY_APP_UUID": asset_uuid, "OPENFACTORY_KSQLDB_URL": None,
                               "OPENFACTORY_TRANSPORT_URL": f"memory://r-{uuid.uuid4()}"}, add_api=False)
    runner = app.test_cli_runner()
    text = runner.invoke(args=["ofa", "status"])
    assert text.exit_code == 0, text.output
    assert ("WARNING:   asset UUID 'demo-machine' is not upper case" in text.stdout) == warned
    report = json.loads(runner.invoke(args=["ofa", "status", "--json"]).stdout)
    assert bool(report["routing_warnings"]) == warned
