"""Another asset seen from this app: snapshot, methods, and calling it by command."""

import uuid

import pytest

from app_factory import build_app
from flask_openfactory import SampleAttribute, current_openfactory, ofa_method
from flask_openfactory.runtime import AssetRuntime, RuntimeSettings
from flask_openfactory.transports import TransportOptions
from flask_openfactory.wire.methods import spec_of
from harness.topic_reader import raw_records
from kafka_config import KAFKA_TEST_CONFIG
from ksqldb_standin import running_standin


@ofa_method(description="Move X.")
def move(x: float) -> float:
    return x * 2


def machine(url: str, options: TransportOptions | None = None, uuid_: str = "MACHINE") -> AssetRuntime:
    runtime = AssetRuntime(RuntimeSettings(asset_uuid=uuid_, transport_url=url,
                                           transport_options=options or TransportOptions()))
    runtime.declare_attribute(SampleAttribute("x", tag="X", default=1.5))
    runtime.declare_method(spec_of(move))
    return runtime


@pytest.fixture(params=["memory", "sqlite"])
def url(request, tmp_path):
    return f"memory://remote-{uuid.uuid4()}" if request.param == "memory" else f"sqlite:///{tmp_path}/r.db"


def test_snapshot_methods_and_call(url):
    target = machine(url)
    target.start()
    caller = AssetRuntime(RuntimeSettings(asset_uuid="HMI", transport_url=url))
    try:
        other = caller.asset("MACHINE")
        assert other.attributes()["x"] == 1.5
        assert other["avail"] == "AVAILABLE"
        assert "move" not in other.records
        assert other.methods()["move"]["description"] == "Move X."
        assert other.methods()["move"]["arguments"][0]["name"] == "x"
        result = other.call("move", x=4)
        assert (result.status, result.result, result.sender_uuid) == ("OK", 8.0, "HMI")
        assert other.call("teleport").status == "REJECTED"
        cid = other.call("move", x=1, wait=None)
        assert uuid.UUID(cid)
        assert other.refresh()["x"] == 1.5
        with pytest.raises(KeyError, match="no attribute 'nope'"):
            other["nope"]
    finally:
        target.stop(2.0)


def test_call_without_an_executor_times_out_clearly(url):
    caller = AssetRuntime(RuntimeSettings(asset_uuid="HMI", transport_url=url))
    with pytest.raises(TimeoutError, match="no move_RESULT from asset 'NOBODY' within 0.3s"):
        caller.asset("NOBODY").call("move", x=1, wait=0.3)


def test_from_a_view_through_current_openfactory(url):
    target = machine(url)
    target.start()
    app = build_app(__name__, {"OPENFACTORY_TRANSPORT_URL": url, "OPENFACTORY_APP_UUID": "HMI",
                               "OPENFACTORY_START_ON_REQUEST": False}, constructor=True, add_cli=False)

    @app.post("/go")
    def go():
        return {"status": current_openfactory.asset("MACHINE").call("move", x=2).status}

    try:
        assert app.test_client().post("/go").json == {"status": "OK"}
    finally:
        target.stop(2.0)


def test_on_kafka_the_snapshot_comes_from_ksqldb(kafka_broker, unique_topic):
    kafka_broker.create_topic(unique_topic, 3)
    target_uuid = f"MACHINE-{uuid.uuid4().hex[:8]}"
    base = TransportOptions(topic=unique_topic, kafka_config=dict(KAFKA_TEST_CONFIG))
    target = machine("kafka://" + kafka_broker.bootstrap, base, uuid_=target_uuid)
    target.start()
    try:
        target.set("x", 7.25)
        assert target.transport.flush(10) == 0
        raw = raw_records(kafka_broker.bootstrap, unique_topic)
        with running_standin(unique_topic) as standin:
            assert standin.materialize(raw) > 0
            options = TransportOptions(topic=unique_topic, kafka_config=dict(KAFKA_TEST_CONFIG),
                                       ksqldb_url=standin.url)
            caller = AssetRuntime(RuntimeSettings(asset_uuid="HMI", transport_url="kafka://" + kafka_broker.bootstrap,
                                                  transport_options=options))
            other = caller.asset(target_uuid)
            assert other["x"] == 7.25  # ksqlDB answers text; Samples come back as numbers
            assert other.methods()["move"]["arguments"][0]["name"] == "x"
            queries = " ".join(standin.statements("/query"))
            assert f"asset_uuid='{target_uuid}'" in queries
            result = other.call("move", x=3)
            assert (result.status, result.result) == ("OK", 6.0)
            caller.stop(2.0)
    finally:
        target.stop(5.0)
