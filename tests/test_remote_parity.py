"""What the reference's Asset client offers apps, on another asset here: wait_until,
the asset graph (references_above / _below), and addressing by UNS id through ksqlDB.

On the log transports (memory, sqlite) and on the test broker with the ksqlDB
stand-in, which answers the platform's pull queries.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from flask_openfactory import EventAttribute, SampleAttribute
from flask_openfactory.runtime import AssetRuntime, RuntimeSettings
from flask_openfactory.runtime.uns import UNSLookupError
from flask_openfactory.transports import TransportOptions
from harness.topic_reader import raw_records
from kafka_config import KAFKA_TEST_CONFIG
from ksqldb_standin import running_standin
from reference_app import publish_reference_app


def machine(url: str, asset_uuid: str = "PRESS-7", options: TransportOptions | None = None) -> AssetRuntime:
    runtime = AssetRuntime(RuntimeSettings(asset_uuid=asset_uuid, transport_url=url,
                                           transport_options=options or TransportOptions()))
    runtime.declare_attribute(EventAttribute("state", tag="State", default="IDLE"))
    runtime.declare_attribute(SampleAttribute("force", tag="Force", default=0.0))
    return runtime


def caller(url: str, options: TransportOptions | None = None) -> AssetRuntime:
    return AssetRuntime(RuntimeSettings(asset_uuid="HMI", transport_url=url,
                                        transport_options=options or TransportOptions()))


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"memory://parity-{uuid.uuid4()}" if request.param == "memory" else f"sqlite:///{tmp_path}/p.db"


@pytest.fixture
def press(url: str) -> Iterator[AssetRuntime]:
    runtime = machine(url)
    runtime.start()
    yield runtime
    runtime.stop(2.0)


def later(seconds: float, action) -> threading.Timer:  # type: ignore[no-untyped-def]
    """Another asset changing something while the caller waits."""
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


# -- wait_until ----------------------------------------------------------------------


def test_wait_until_a_value_that_holds_already_returns_at_once(url: str, press: AssetRuntime) -> None:
    assert caller(url).asset("PRESS-7").wait_until("state", "IDLE", timeout=0.5) is True


def test_wait_until_a_value_set_later(url: str, press: AssetRuntime) -> None:
    other = caller(url).asset("PRESS-7")
    timer = later(0.3, lambda: press.set("state", "RUNNING"))
    assert other.wait_until("state", "RUNNING", timeout=10) is True
    timer.join()
    assert other["state"] == "RUNNING"


def test_wait_until_a_predicate(url: str, press: AssetRuntime) -> None:
    timer = later(0.2, lambda: [press.set("force", f) for f in (10.0, 50.0, 120.0)])
    assert caller(url).asset("PRESS-7").wait_until("force", lambda v: float(v) > 100, timeout=10) is True
    timer.join()


def test_wait_until_times_out_with_false(url: str, press: AssetRuntime) -> None:
    started = time.monotonic()
    assert caller(url).asset("PRESS-7").wait_until("state", "NEVER", timeout=0.4) is False
    assert time.monotonic() - started >= 0.4


def test_wait_until_an_attribute_that_appears_later(url: str) -> None:
    hmi = caller(url)
    timer = later(0.2, lambda: publish_reference_app(hmi.transport, "REF-APP"))
    assert hmi.asset("REF-APP").wait_until("avail", "AVAILABLE", timeout=10) is True
    timer.join()


def test_type_samples_events_and_conditions_as_the_reference_lists_them(url: str, press: AssetRuntime) -> None:
    hmi = caller(url)
    publish_reference_app(hmi.transport, "REF-APP")
    ref = hmi.asset("REF-APP")
    assert ref.asset_type() == "OpenFactoryApp"
    assert {"ID": "avail", "VALUE": "AVAILABLE", "TAG": "Availability"} in ref.events()
    other = hmi.asset("PRESS-7")
    assert other.samples() == [{"ID": "force", "VALUE": 0.0, "TAG": "Force"}]
    assert other.conditions() == [] and other.asset_type() == "OpenFactoryApp"
    assert hmi.asset("NOBODY").asset_type() is None


# -- the asset graph -------------------------------------------------------------------


def test_references_are_read_and_added_as_the_reference_does(url: str, press: AssetRuntime) -> None:
    other = caller(url).asset("PRESS-7")
    assert other.references_above() == [] and other.references_below() == []
    other.add_reference_above("LINE-1")
    other.add_reference_above("CELL-3")
    other.add_reference_above("LINE-1")  # already there: not listed twice
    other.add_reference_below("TOOL-9")
    record = press.transport.snapshot("PRESS-7")["references_above"]
    assert (record.value, record.tag, record.type) == ("CELL-3, LINE-1", "AssetsReferences", "OpenFactory")
    fresh = caller(url).asset("PRESS-7")
    assert fresh.references_above() == ["CELL-3", "LINE-1"]
    assert fresh.references_below() == ["TOOL-9"]
    with pytest.raises(ValueError, match="cannot route"):
        fresh.add_reference_below("BAD.UUID")


# -- on the test broker, with the ksqlDB stand-in ---------------------------------------


def test_on_kafka_wait_until_graph_and_uns_through_ksqldb(kafka_broker, unique_topic: str) -> None:  # type: ignore[no-untyped-def]
    kafka_broker.create_topic(unique_topic, 3)
    url = "kafka://" + kafka_broker.bootstrap
    press_uuid = f"PRESS-{uuid.uuid4().hex[:6].upper()}"
    with running_standin(unique_topic) as standin:
        options = TransportOptions(topic=unique_topic, kafka_config=dict(KAFKA_TEST_CONFIG), ksqldb_url=standin.url)
        target = machine(url, press_uuid, options)
        target.start()
        hmi = caller(url, options)
        try:
            assert target.transport.flush(10) == 0
            assert standin.materialize(raw_records(kafka_broker.bootstrap, unique_topic)) > 0
            standin.set_uns(press_uuid, "acme/plant-1/line-2/press")

            other = hmi.asset_by_uns("acme/plant-1/line-2/press")
            assert other.asset_uuid == press_uuid and other["state"] == "IDLE"  # state from ksqlDB
            assert "asset_to_uns_map WHERE uns_id='acme/plant-1/line-2/press'" in " ".join(standin.statements("/query"))

            timer = later(0.5, lambda: target.set("state", "RUNNING"))  # arrives through the broker
            assert other.wait_until("state", "RUNNING", timeout=20) is True
            timer.join()

            other.add_reference_above("LINE-2")
            other.add_reference_below("DIE-4")
            assert standin.materialize(raw_records(kafka_broker.bootstrap, unique_topic)) > 0
            seen = hmi.asset(press_uuid)
            assert seen.references_above() == ["LINE-2"] and seen.references_below() == ["DIE-4"]
            row = standin.assets[press_uuid]["references_above"]
            assert (row["TAG"], row["TYPE"]) == ("AssetsReferences", "OpenFactory")

            standin.set_uns("OTHER-PRESS", "acme/plant-1/line-2/press")  # the platform moves the id
            standin.set_uns(press_uuid, None)
            assert other.refresh().asset_uuid == "OTHER-PRESS"
            with pytest.raises(UNSLookupError, match="maps to no asset"):
                hmi.asset_by_uns("acme/nowhere")
        finally:
            hmi.stop(2.0)
            target.stop(5.0)


def test_uns_lookup_without_ksqldb_says_what_is_missing(url: str) -> None:
    with pytest.raises(UNSLookupError, match="needs ksqlDB: set OPENFACTORY_KSQLDB_URL"):
        caller(url).asset_by_uns("acme/plant-1/press")


def test_uns_lookup_quotes_the_id(url: str) -> None:
    with running_standin("t") as standin:
        standin.set_uns("PRESS-Q", "it's/odd")
        options = TransportOptions(ksqldb_url=standin.url)
        assert caller(url, options).asset_by_uns("it's/odd").asset_uuid == "PRESS-Q"
        assert json.dumps("uns_id='it''s/odd'")[1:-1] in " ".join(standin.statements("/query"))
