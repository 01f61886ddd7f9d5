"""Limits (issue 6): argument counts and sizes, and a full outgoing queue.

Commands over every transport (memory, sqlite, the real Kafka broker) and
HTTP calls share ``OPENFACTORY_MAX_ARGUMENTS`` and
``OPENFACTORY_MAX_COMMAND_BYTES``; a command over them is ``REJECTED`` with a
reason of its own and never runs. A full outgoing queue (``TransportBusy``)
is a 503 JSON answer with ``Retry-After``, counted, on our routes and on the
host app's own routes alike.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app_factory import build_app
from flask_openfactory import (
    AssetBlueprint,
    ConfigurationError,
    EventAttribute,
    TransportBusy,
    TransportError,
    ofa_method,
)
from flask_openfactory.runtime import AssetRuntime, RuntimeSettings, RuntimeStopped
from flask_openfactory.settings import runtime_settings
from flask_openfactory.transports import TransportOptions, create_transport
from flask_openfactory.transports.memory import memory_log
from flask_openfactory.wire.commands import ArgumentLimits, EnvelopeError, parse_envelope
from flask_openfactory.wire.methods import spec_of
from flask_openfactory.wire.protocol import Record
from harness.broker import TansuBroker
from harness.waiting import wait_for
from kafka_config import KAFKA_TEST_CONFIG

MACHINE = "LIMITS-MACHINE"
CALLER = "LIMITS-CALLER"
calls: list[dict[str, str]] = []


@ofa_method()
def configure(a: str = "", b: str = "", c: str = "") -> dict[str, str]:
    calls.append({"a": a, "b": b, "c": c})
    return {"a": a, "b": b, "c": c}


def envelope_doc(arguments: Any) -> dict[str, Any]:
    return {"header": {"correlation_id": str(uuid.uuid4()), "sender_uuid": CALLER, "timestamp": None},
            "arguments": arguments}


# -- the envelope check -------------------------------------------------------------------


def test_parse_envelope_counts_arguments_and_names_the_limit() -> None:
    limits = ArgumentLimits(max_arguments=3, max_bytes=10_000)
    assert len(parse_envelope(envelope_doc({"a": "1", "b": "2", "c": "3"}), limits).arguments) == 3
    doc = envelope_doc({f"k{i}": "1" for i in range(4)})
    with pytest.raises(EnvelopeError) as caught:
        parse_envelope(doc, limits)
    assert caught.value.code == "too_many_arguments"
    assert caught.value.reason == (
        "too_many_arguments: 4 arguments, the limit is 3 (OPENFACTORY_MAX_ARGUMENTS)")
    assert caught.value.correlation_id == doc["header"]["correlation_id"]  # still answerable
    assert caught.value.sender_uuid == CALLER
    assert parse_envelope(doc).arguments  # no limits given: the contract's rules only


def test_parse_envelope_measures_the_serialized_arguments() -> None:
    # {"a":"xxxx…"} in compact UTF-8 JSON: 6 + n + 2 bytes; "é" is 2 bytes in UTF-8
    limits = ArgumentLimits(max_arguments=64, max_bytes=100)
    assert parse_envelope(envelope_doc({"a": "x" * 92}), limits).arguments["a"] == "x" * 92  # exactly 100
    with pytest.raises(EnvelopeError) as caught:
        parse_envelope(envelope_doc({"a": "x" * 93}), limits)
    assert caught.value.code == "arguments_too_large"
    assert caught.value.reason == ("arguments_too_large: the serialized arguments are 101 bytes, "
                                   "the limit is 100 bytes (OPENFACTORY_MAX_COMMAND_BYTES)")
    with pytest.raises(EnvelopeError, match="are 102 bytes"):
        parse_envelope(envelope_doc({"a": "é" * 47}), limits)


def test_other_envelope_errors_keep_their_reason() -> None:
    with pytest.raises(EnvelopeError) as caught:
        parse_envelope(envelope_doc({"a": 1}), ArgumentLimits())
    assert caught.value.code == "invalid_envelope"


# -- settings -------------------------------------------------------------------------------


def base_config(**overrides: Any) -> dict[str, Any]:
    app = build_app(__name__, constructor=True, add_cli=False)  # applies every default
    config = {k: v for k, v in app.config.items() if k.startswith("OPENFACTORY_")}
    config.update(OPENFACTORY_TRANSPORT_URL="memory://limits-settings", OPENFACTORY_APP_UUID=MACHINE, **overrides)
    return config


def test_defaults_and_parsed_values() -> None:
    settings = runtime_settings(base_config())
    assert settings.argument_limits == ArgumentLimits(max_arguments=64, max_bytes=65536)
    assert settings.transport_options.max_pending_bytes == 64 * 1024 * 1024
    settings = runtime_settings(base_config(OPENFACTORY_MAX_ARGUMENTS="8", OPENFACTORY_MAX_COMMAND_BYTES=" 512 ",
                                            OPENFACTORY_MAX_PENDING_BYTES="1048576"))
    assert settings.argument_limits == ArgumentLimits(max_arguments=8, max_bytes=512)
    assert settings.transport_options.max_pending_bytes == 1048576


@pytest.mark.parametrize(("key", "value"), [
    ("OPENFACTORY_MAX_ARGUMENTS", -1), ("OPENFACTORY_MAX_ARGUMENTS", "many"), ("OPENFACTORY_MAX_ARGUMENTS", 2.5),
    ("OPENFACTORY_MAX_COMMAND_BYTES", 1), ("OPENFACTORY_MAX_COMMAND_BYTES", True),
    ("OPENFACTORY_MAX_PENDING_BYTES", 1000), ("OPENFACTORY_MAX_PENDING_BYTES", None),
])
def test_bad_values_name_the_key(key: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=key):
        runtime_settings(base_config(**{key: value}))


# -- commands over every transport ------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "kafka"])
def transport(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, TransportOptions]:
    calls.clear()
    if request.param == "memory":
        return f"memory://limits-{uuid.uuid4().hex}", TransportOptions()
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/limits.sqlite3", TransportOptions()
    broker: TansuBroker = request.getfixturevalue("kafka_broker")
    topic: str = request.getfixturevalue("unique_topic")
    broker.create_topic(topic, 1)
    return f"kafka://{broker.bootstrap}", TransportOptions(topic=topic, kafka_config=dict(KAFKA_TEST_CONFIG),
                                                         lock_dir=str(tmp_path / "locks"))


@pytest.fixture
def runtimes() -> Iterator[list[AssetRuntime]]:
    made: list[AssetRuntime] = []
    yield made
    for runtime in made:
        runtime.stop(2.0, publish_unavailable=False)


def test_commands_over_the_limits_are_rejected_with_their_own_reason_and_never_run(
        transport: tuple[str, TransportOptions], runtimes: list[AssetRuntime]) -> None:
    url, options = transport
    machine = AssetRuntime(RuntimeSettings(asset_uuid=MACHINE, transport_url=url, transport_options=options,
                                           argument_limits=ArgumentLimits(max_arguments=3, max_bytes=100)))
    machine.declare_method(spec_of(configure))
    runtimes.append(machine)
    machine.start()
    caller = AssetRuntime(RuntimeSettings(asset_uuid=CALLER, transport_url=url, transport_options=options,
                                          execute_commands=False))
    runtimes.append(caller)

    def call(arguments: dict[str, str]) -> Any:
        _, result = caller.send_command(MACHINE, "configure", arguments, wait=20)
        assert result is not None, f"no answer to configure{arguments}"
        return result

    wide = call({"a": "1", "b": "2", "c": "3", "d": "4"})  # d is also unknown: the count comes first
    assert wide.status == "REJECTED"
    assert wide.error == "too_many_arguments: 4 arguments, the limit is 3 (OPENFACTORY_MAX_ARGUMENTS)"
    big = call({"a": "x" * 200})
    assert big.status == "REJECTED"
    assert big.error == ("arguments_too_large: the serialized arguments are 208 bytes, the limit is 100 bytes "
                         "(OPENFACTORY_MAX_COMMAND_BYTES)")
    assert calls == []
    fits = call({"a": "x" * 80, "c": "3"})  # 3 arguments would fit too; {"a":"x…","c":"3"} is 94 bytes
    assert fits.status == "OK" and calls == [{"a": "x" * 80, "b": "", "c": "3"}]
    counters = machine.counters
    assert (counters["rejected_too_many_arguments"], counters["rejected_arguments_too_large"],
            counters["rejected_invalid_envelope"], counters["commands_ok"]) == (1, 1, 0, 1)


# -- HTTP -----------------------------------------------------------------------------------------


level = EventAttribute("level", tag="Limits.Level", default="none")


def host_routes(app: Flask) -> None:
    """The host app's own routes, added before the extension."""

    @app.post("/level/<value>")
    def set_level(value: str) -> dict[str, str]:
        """A host app's own route that sets an attribute."""
        level.set(value)
        return {"level": value}


def limits_blueprint() -> AssetBlueprint:
    bp = AssetBlueprint("limits", __name__)
    bp.attribute(level)
    bp.method(configure)
    return bp


def make_app(**config: Any) -> Flask:
    return build_app(__name__, {"TESTING": True, "OPENFACTORY_TRANSPORT_URL": f"memory://limits-http-{uuid.uuid4().hex}",
                                "OPENFACTORY_APP_UUID": MACHINE, **config},
                     before_extension=host_routes, blueprints=[limits_blueprint()], constructor=True, add_cli=False)


@pytest.fixture
def apps() -> Iterator[list[Flask]]:
    made: list[Flask] = []
    yield made
    for app in made:
        app.extensions["openfactory"].runtime.stop(2.0)


def client_of(apps: list[Flask], **config: Any) -> FlaskClient:
    calls.clear()
    app = make_app(**config)
    apps.append(app)
    app.extensions["openfactory"].runtime.start()
    return app.test_client()


def json_error(response: Any, code: int) -> dict[str, Any]:
    assert response.status_code == code, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["code"] == code and isinstance(body["message"], str)
    return body  # type: ignore[no-any-return]


def test_http_call_with_too_many_arguments_is_400_naming_the_limit(apps: list[Flask]) -> None:
    client = client_of(apps, OPENFACTORY_MAX_ARGUMENTS=2)
    body = json_error(client.post("/ofa/methods/configure", json={"a": "1", "b": "2", "c": "3"}), 400)
    assert body["message"] == "too_many_arguments: 3 arguments, the limit is 2 (OPENFACTORY_MAX_ARGUMENTS)"
    assert calls == []
    response = client.post("/ofa/methods/configure", json={"a": "1", "b": "2"})
    assert response.status_code == 200 and response.get_json()["status"] == "OK"


def test_http_call_with_too_large_arguments_is_413_naming_the_limit(apps: list[Flask]) -> None:
    client = client_of(apps, OPENFACTORY_MAX_COMMAND_BYTES=100)
    text = json.dumps({"a": "x" * 100})
    body = json_error(client.post("/ofa/methods/configure", data=text, content_type="application/json"), 413)
    assert body["message"] == (f"arguments_too_large: the arguments (the request body) are {len(text)} bytes, "
                               "the limit is 100 bytes (OPENFACTORY_MAX_COMMAND_BYTES)")
    assert calls == []
    assert client.post("/ofa/methods/configure", json={"a": "x" * 50}).status_code == 200


def busy(retry_after: float = 5.0) -> TransportBusy:
    error = TransportBusy("the outgoing queue is full (test)")
    error.retry_after = retry_after
    return error


def test_full_queue_on_a_host_route_is_503_json_with_retry_after_and_counted(
        apps: list[Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    client = client_of(apps)
    runtime = apps[0].extensions["openfactory"].runtime

    def refuse(record: Record, on_delivery: Any = None) -> None:
        raise busy(2.5)

    monkeypatch.setattr(runtime.transport, "publish", refuse)
    response = client.post("/level/high")
    body = json_error(response, 503)
    assert body["message"] == "the outgoing queue is full (test)"
    assert response.headers["Retry-After"] == "3"
    assert runtime.counters["busy_refusals"] == 1
    metrics = client.get("/ofa/metrics").get_data(as_text=True)
    assert "openfactory_busy_refusals_total 1.0" in metrics
    monkeypatch.undo()
    assert client.post("/level/low").status_code == 200


def test_full_queue_refuses_a_method_call_before_it_runs(
        apps: list[Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    client = client_of(apps)
    runtime = apps[0].extensions["openfactory"].runtime
    monkeypatch.setattr(runtime.transport, "saturated", lambda: busy())
    response = client.post("/ofa/methods/configure", json={"a": "1"})
    assert json_error(response, 503)["message"] == "the outgoing queue is full (test)"
    assert response.headers["Retry-After"] == "5"
    assert calls == [] and runtime.counters["busy_refusals"] == 1


def test_a_host_apps_own_handler_for_a_full_queue_is_kept(apps: list[Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app()
    apps.append(app)

    @app.errorhandler(TransportBusy)
    def mine(error: TransportBusy) -> tuple[str, int]:
        return "try again later", 503

    runtime = app.extensions["openfactory"].runtime
    runtime.start()

    def refuse(record: Record, on_delivery: Any = None) -> None:
        raise busy()

    monkeypatch.setattr(runtime.transport, "publish", refuse)
    response = app.test_client().post("/level/high")
    assert response.status_code == 503 and response.get_data(as_text=True) == "try again later"


def levels_in_the_log(app: Flask) -> list[Any]:
    """The ``level`` values in the asset's log, read from the log itself, not through the runtime."""
    log = memory_log(app.config["OPENFACTORY_TRANSPORT_URL"].split("://", 1)[1])
    records = [Record.from_wire(key, value) for _, key, value in log.scan(0, MACHINE) if key is not None]
    return [record.value for record in records if record.id == "level"]


def test_a_host_route_that_writes_after_the_stop_answers_503_and_writes_nothing(apps: list[Flask]) -> None:
    # A keep-alive request served by a worker whose exit already stopped the runtime once got a
    # bare 500 from the host app's own route; the client could not tell "retry" from "bug".
    app = make_app()
    apps.append(app)
    client = app.test_client()
    runtime = app.extensions["openfactory"].runtime
    runtime.start()
    assert client.post("/level/before").status_code == 200
    runtime.stop(2.0)
    response = client.post("/level/after")
    assert "was stopped in this process" in json_error(response, 503)["message"]
    assert response.headers["Retry-After"] == "5"
    assert levels_in_the_log(app)[-1] == "before" and "after" not in levels_in_the_log(app)


def test_a_write_in_the_stops_last_step_opens_no_new_producer(apps: list[Flask],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # stop() takes the transport out, then flushes and closes it. A write that came in that
    # window found no transport and no stop yet, and opened a new producer that nobody closed.
    app = make_app()
    apps.append(app)
    runtime = app.extensions["openfactory"].runtime
    runtime.start()
    old = runtime.transport
    flush = old.flush
    late: list[BaseException] = []

    def flush_with_a_late_write(timeout: float) -> int:
        if runtime._transport is None:  # the last flush, once stop() has taken the transport out (others come first)
            try:
                runtime.set("level", "late")
            except TransportError as exc:
                late.append(exc)
        return flush(timeout)

    monkeypatch.setattr(old, "flush", flush_with_a_late_write)
    runtime.stop(2.0)
    assert [type(exc) for exc in late] == [RuntimeStopped]
    assert runtime._transport is None and runtime.stopped
    assert "late" not in levels_in_the_log(app)


# -- the Kafka producer's bounds ----------------------------------------------------------------


def test_kafka_queue_bounds_records_and_bytes_then_fails_fast_until_room_is_made(
        kafka_broker: TansuBroker, unique_topic: str) -> None:
    """Broker frozen: the bound holds, the first refusal waits the publish timeout, later ones do not."""
    kafka_broker.create_topic(unique_topic, 1)
    config = {**KAFKA_TEST_CONFIG, "producer.request.timeout.ms": 2000}
    by_count = create_transport(f"kafka://{kafka_broker.bootstrap}", TransportOptions(
        topic=unique_topic, kafka_config=config, max_pending=20, publish_timeout=0.3))
    by_bytes = create_transport(f"kafka://{kafka_broker.bootstrap}", TransportOptions(
        topic=unique_topic, kafka_config=config, max_pending=100_000, max_pending_bytes=4096, publish_timeout=0.3))

    def record(n: int, size: int = 10) -> Record:
        return Record.create("LIMITS-KAFKA", "level", f"{n:06d}" + "x" * size, tag="Limits.Level", type="Events")

    try:
        for transport in (by_count, by_bytes):
            assert transport.check(10).ok
        kafka_broker.freeze()
        try:
            accepted: dict[str, list[Record]] = {"count": [], "bytes": []}
            for name, transport, size in (("count", by_count, 10), ("bytes", by_bytes, 500)):
                for n in range(1000):
                    try:
                        transport.publish(record(n, size))
                    except TransportBusy as exc:
                        assert "OPENFACTORY_MAX_PENDING" in str(exc) and exc.retry_after >= 1
                        break
                    accepted[name].append(record(n, size))
                assert transport.saturated() is not None
                attempts = transport.stats()["queue_full"]
                with pytest.raises(TransportBusy):
                    transport.publish(record(9999, size))
                # one attempt, no waiting loop: nothing left the queue since the last refusal
                assert transport.stats()["queue_full"] == attempts + 1
                assert transport.stats()["busy"] == 2
            assert len(accepted["count"]) == 20
            assert 0 < len(accepted["bytes"]) <= 4096 // 500
        finally:
            kafka_broker.thaw()
        for transport in (by_count, by_bytes):
            assert transport.flush(30) == 0
            assert transport.saturated() is None
            transport.publish(record(0))  # room again
            assert transport.flush(30) == 0
            stats = transport.stats()
            assert stats["delivery_failures"] == 0 and stats["delivered"] == stats["published"]
    finally:
        by_count.close(5)
        by_bytes.close(5)


# -- memory that others' writes could grow ------------------------------------------------


def _runtime(url: str) -> AssetRuntime:
    runtime = AssetRuntime(RuntimeSettings(asset_uuid=MACHINE, transport_url=url))
    runtime.declare_attribute(EventAttribute("mode", tag="Mode", default="IDLE"))
    runtime.declare_method(spec_of(configure))
    return runtime


def test_ids_nobody_declared_do_not_grow_the_state_cache() -> None:
    url = f"memory://limits-cache-{uuid.uuid4()}"
    runtime = _runtime(url)
    runtime.start()
    try:
        writer = create_transport(url)
        for n in range(2_000):
            writer.publish(Record.create(MACHINE, f"junk_{n}", n, tag="Junk", type="Events"))
            writer.publish(Record.create(MACHINE, f"junk_{n}_CMD", "{}", tag="Method", type="Method"))
        writer.publish(Record.create(MACHINE, "mode", "RUNNING", tag="Mode", type="Events"))
        wait_for(lambda: runtime.value("mode") == "RUNNING", what="the declared attribute's update")
        bound = len(runtime.declared_attributes) + 3 * len(runtime.methods)  # ID, _CMD, _RESULT each
        cached = runtime.cached_records()
        assert [rid for rid in cached if rid.startswith("junk_")] == []
        assert len(cached) <= bound
        assert not [r.id for r in runtime.records() if r.id.startswith("junk_")]
    finally:
        runtime.stop()


def test_recovery_holds_back_only_commands_not_the_partitions_other_traffic() -> None:
    """A new executor reads everything since the committed position before it runs anything."""
    url = f"memory://limits-backlog-{uuid.uuid4()}"
    first = _runtime(url)
    first.start()
    first.stop()  # the committed position stays where it was
    writer = create_transport(url)
    for n in range(3_000):  # attribute writes under our key and another asset's records
        writer.publish(Record.create(MACHINE, "mode", f"M{n}", tag="Mode", type="Events"))
        writer.publish(Record.create("NEIGHBOUR", "x", n, tag="X", type="Samples"))
    calls.clear()
    sent = [first.send_command(MACHINE, "configure", {"a": str(n)}, sender_uuid=CALLER)[0] for n in range(5)]
    second = _runtime(url)
    second.start()
    try:
        wait_for(lambda: len(calls) == 5, what="the 5 commands run after recovery")
        assert [c["a"] for c in calls] == ["0", "1", "2", "3", "4"]
        dispatcher = second.dispatcher_state()
        assert dispatcher is not None and dispatcher.largest_backlog == 5, sent
    finally:
        second.stop()


def test_commands_wait_in_the_log_while_the_outgoing_queue_is_known_full() -> None:
    """A result that could not be published must not follow a machine that moved."""
    url = f"memory://limits-held-{uuid.uuid4()}"
    runtime = _runtime(url)
    runtime.start()
    full = {"on": True}
    transport = runtime.transport
    transport.saturated = lambda: TransportBusy("queue full (test)") if full["on"] else None  # type: ignore[method-assign]
    try:
        calls.clear()
        runtime.send_command(MACHINE, "configure", {"a": "held"}, sender_uuid=CALLER)
        wait_for(lambda: runtime.counters["commands_held_queue_full"] == 1, what="the command held back")
        assert calls == []
        full["on"] = False
        wait_for(lambda: calls == [{"a": "held", "b": "", "c": ""}], what="the command run once there is room")
    finally:
        runtime.stop()
