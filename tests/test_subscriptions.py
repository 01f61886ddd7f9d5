"""Subscriptions to other assets on the memory and sqlite transports (Kafka: test_subscriptions_kafka)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from flask import Flask, current_app

from app_factory import build_app
from flask_openfactory import AssetBlueprint, Record
from flask_openfactory.runtime.subscriptions import subscribe
from flask_openfactory.testing import runtime_of
from flask_openfactory.transports import create_transport
from flask_openfactory.wire.commands import command_record, new_envelope
from harness.waiting import wait_for

MACHINE = "MACHINE-7"


@pytest.fixture(params=["memory", "sqlite"])
def url(request, tmp_path) -> str:
    if request.param == "memory":
        return f"memory://subs-{uuid.uuid4()}"
    return f"sqlite:///{tmp_path / 'log.sqlite3'}"


class Seen:
    """Updates a handler received, with the app each saw through current_app."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.apps: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, record: Record) -> None:
        with self.lock:
            self.records.append(record)
            self.apps.add(current_app.config["OPENFACTORY_APP_UUID"])

    def values(self, attr_id: str | None = None) -> list[Any]:
        with self.lock:
            return [r.value for r in self.records if attr_id is None or r.id == attr_id]


def watcher_app(url: str, tmp_lock: str, handlers: dict[str, tuple[Seen, dict[str, Any]]],
                *, app_uuid: str = "WATCHER") -> Flask:
    bp = AssetBlueprint(f"watch-{uuid.uuid4().hex[:8]}", __name__)
    for name, (seen, options) in handlers.items():
        bp.subscribe(options.pop("asset", MACHINE), name=name, **options)(seen)
    return build_app(__name__, {"OPENFACTORY_APP_UUID": app_uuid, "OPENFACTORY_TRANSPORT_URL": url,
                                "OPENFACTORY_LOCK_DIR": tmp_lock, "MACHINE_UUID": MACHINE},
                     blueprints=[bp], constructor=True)


def machine_writes(url: str, *updates: tuple[str, Any, str]) -> None:
    transport = create_transport(url)
    try:
        for attr_id, value, type_ in updates:
            transport.publish(Record.create(MACHINE, attr_id, value, tag=attr_id.upper(), type=type_))
        transport.flush(5)
    finally:
        transport.close()


def test_current_state_first_then_each_update_in_order_filtered(url: str, tmp_path) -> None:
    machine_writes(url, ("position_x", 1.0, "Samples"), ("status", "READY", "Events"))
    every, x_only, events = Seen(), Seen(), Seen()
    app = watcher_app(url, str(tmp_path), {
        "every": (every, {}),
        "x_only": (x_only, {"attribute": "position_x"}),
        "events": (events, {"type": "Events"}),
    })
    runtime = runtime_of(app)
    runtime.start()
    try:
        # each subscription starts on its own: all three have the current state before the updates
        wait_for(lambda: x_only.values() == [1.0] and events.values() == ["READY"] and len(every.records) == 2,
                 what="the current state delivered to each subscription")
        machine_writes(url, *[("position_x", float(v), "Samples") for v in range(2, 12)],
                       ("status", "ACTIVE", "Events"))
        # commands, results and method advertisements of the machine are not attribute updates
        transport = create_transport(url)
        transport.publish(command_record(MACHINE, "home", new_envelope("SOMEONE")))
        transport.publish(Record.create(MACHINE, "home", "{\"description\": \"x\"}", tag="Method", type="Method"))
        transport.close()
        assert runtime.subscriptions_settled(10)
        assert x_only.values() == [float(v) for v in range(1, 12)]
        assert events.values() == ["READY", "ACTIVE"]
        assert sorted(every.values("status")) == ["ACTIVE", "READY"]
        assert {r.id for r in every.records} == {"position_x", "status"}
        assert every.apps == {"WATCHER"}
    finally:
        runtime.stop()


def test_updates_written_while_no_process_watched_are_delivered_after_a_takeover(url: str, tmp_path) -> None:
    seen = Seen()
    first = runtime_of(watcher_app(url, str(tmp_path), {"x": (seen, {"attribute": "position_x"})}))
    first.start()
    assert first.subscriptions_settled(10)
    machine_writes(url, ("position_x", 1.0, "Samples"))
    wait_for(lambda: seen.values() == [1.0], what="the first update")
    first.stop()
    machine_writes(url, *[("position_x", float(v), "Samples") for v in (2, 3, 4)])
    second = runtime_of(watcher_app(url, str(tmp_path), {"x": (seen, {"attribute": "position_x"})}))
    second.start()
    try:
        wait_for(lambda: seen.values()[-1:] == [4.0], what="the updates written in between")
        delivered = seen.values()
        assert delivered[:4] == [1.0, 2.0, 3.0, 4.0]  # each at least once, in order
        assert delivered[4:] in ([], [4.0])  # the current state may follow (at least once)
    finally:
        second.stop()


def test_an_every_worker_subscription_runs_in_each_process(url: str, tmp_path) -> None:
    one, two = Seen(), Seen()
    first = runtime_of(watcher_app(url, str(tmp_path), {"cache": (one, {"every_worker": True})}))
    second = runtime_of(watcher_app(url, str(tmp_path), {"cache": (two, {"every_worker": True})}))
    first.start()
    second.start()
    try:
        assert first.subscriptions_settled(10) and second.subscriptions_settled(10)
        machine_writes(url, ("position_x", 5.0, "Samples"))
        wait_for(lambda: one.values() == [5.0] and two.values() == [5.0], what="both workers updated")
    finally:
        first.stop()
        second.stop()


def test_a_raising_handler_is_retried_then_the_update_skipped_and_counted(url: str, tmp_path) -> None:
    delivered: list[Any] = []

    def flaky(record: Record) -> None:
        delivered.append(record.value)
        if record.value == "bad":
            raise RuntimeError("cannot handle this one")

    bp = AssetBlueprint("flaky", __name__)
    bp.subscribe(MACHINE, attribute="status")(flaky)
    app = build_app(__name__, {"OPENFACTORY_APP_UUID": "WATCHER", "OPENFACTORY_TRANSPORT_URL": url,
                               "OPENFACTORY_LOCK_DIR": str(tmp_path)},
                    blueprints=[bp], constructor=True)
    runtime = runtime_of(app)
    runtime.start()
    try:
        assert runtime.subscriptions_settled(10)
        machine_writes(url, ("status", "bad", "Events"), ("status", "good", "Events"))
        wait_for(lambda: "good" in delivered, what="the next update after the bad one")
        assert delivered == ["bad", "bad", "bad", "good"]
        assert runtime.counters["subscription_updates_skipped"] == 1
        assert runtime.counters["subscription_handler_errors"] == 3
    finally:
        runtime.stop()


def test_the_watched_asset_may_come_from_config(url: str, tmp_path) -> None:
    seen = Seen()
    app = watcher_app(url, str(tmp_path), {
        "configured": (seen, {"asset": lambda: current_app.config["MACHINE_UUID"], "attribute": "position_x"}),
    })
    runtime = runtime_of(app)
    runtime.start()
    try:
        assert runtime.subscriptions_settled(10)
        machine_writes(url, ("position_x", 9.0, "Samples"))
        wait_for(lambda: seen.values() == [9.0], what="the update of the configured asset")
    finally:
        runtime.stop()


def test_a_missing_config_value_is_logged_and_the_app_still_serves(url: str, tmp_path, caplog) -> None:
    app = watcher_app(url, str(tmp_path), {
        "broken": (Seen(), {"asset": lambda: current_app.config["NO_SUCH_KEY"]}),
    })
    runtime = runtime_of(app)
    runtime.start()
    try:
        wait_for(lambda: "could not start" in caplog.text, what="the error logged")
        assert "NO_SUCH_KEY" in caplog.text
        assert app.test_client().get("/ofa/attributes").status_code == 200
        ready = app.test_client().get("/ofa/ready")  # what the API shows is true: nothing runs
        assert ready.status_code == 503 and "NO_SUCH_KEY" in ready.json["checks"]["duties"]["detail"]
    finally:
        runtime.stop()


@pytest.mark.parametrize(
    ("arguments", "text"),
    [
        ({"asset": "bad asset"}, "watched asset UUID"),
        ({"asset": MACHINE, "attribute": "a.b"}, "watched attribute ID"),
        ({"asset": MACHINE, "type": "Method"}, "subscription type must be one of Samples, Events, Condition"),
    ],
)
def test_bad_subscriptions_fail_at_declaration(arguments: dict[str, Any], text: str) -> None:
    with pytest.raises(ValueError, match=text):
        subscribe(**arguments)
