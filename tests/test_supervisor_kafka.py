"""Issue 7 acceptance: the supervisor example and the demo machine on the real test broker.

Both apps run in this process with production-like Kafka settings (one
topic of three partitions, distinct asset UUIDs, the test broker's client
settings). A third party moves the machine out of range with a ``move_axis``
command, as any asset would. The supervisor must raise its Fault condition
within one second of the machine's out-of-range ``position_x`` record (the
two records' timestamps are compared), command ``home()`` exactly once per
excursion, and return to Normal once the machine is back.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import demo
import supervisor
from flask_openfactory.runtime import AssetRuntime, RuntimeSettings
from flask_openfactory.testing import runtime_of
from flask_openfactory.transports import TransportOptions
from harness.broker import TansuBroker
from harness.topic_watch import CommandSender, Seen, TopicWatcher
from harness.waiting import wait_for
from kafka_config import KAFKA_TEST_CONFIG

PARTITIONS = 3
EXCURSIONS = 3
REACTION_BOUND = 1.0  # seconds: the acceptance ("within one second")
X_MIN, X_MAX = -100.0, 100.0


def stamped(seen: Seen) -> datetime:
    """The record's own timestamp (set by the asset that wrote it)."""
    return datetime.strptime(seen.record.timestamp, "%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing from the developer's shell may configure the apps under test."""
    for name in list(os.environ):
        if name.startswith(("FLASK_", "OPENFACTORY_", "SWARM_")) or name in (
                "APP_UUID", "KAFKA_BROKER", "KSQLDB_URL", "SECRET_KEY"):
            monkeypatch.delenv(name)


def kafka_overrides(broker: TansuBroker, topic: str, app_uuid: str, lock_dir: Path) -> dict[str, Any]:
    return {
        "OPENFACTORY_TRANSPORT_URL": f"kafka://{broker.bootstrap}",
        "OPENFACTORY_ASSETS_TOPIC": topic,
        "OPENFACTORY_KAFKA_CONFIG": dict(KAFKA_TEST_CONFIG),
        "OPENFACTORY_APP_UUID": app_uuid,
        "OPENFACTORY_LOCK_DIR": str(lock_dir),
        "OPENFACTORY_KSQLDB_URL": None,
        "OPENFACTORY_STOP_TIMEOUT": 5.0,
    }


@pytest.fixture
def plant(kafka_broker: TansuBroker, unique_topic: str, tmp_path: Path, clean_env: None) -> Iterator[dict[str, Any]]:
    """The machine, the supervisor, an operator asset that commands the machine, and watchers of both keys."""
    kafka_broker.create_topic(unique_topic, PARTITIONS)
    machine_uuid, supervisor_uuid = f"CNC-{uuid.uuid4().hex[:8]}", f"SUP-{uuid.uuid4().hex[:8]}"
    lock_dir = tmp_path / "locks"
    machine_app = demo.create_app("testing", kafka_overrides(kafka_broker, unique_topic, machine_uuid, lock_dir))
    supervisor_app = supervisor.create_app("testing", {
        **kafka_overrides(kafka_broker, unique_topic, supervisor_uuid, lock_dir),
        "SUPERVISOR_MACHINE_UUID": machine_uuid, "SUPERVISOR_X_MIN": X_MIN, "SUPERVISOR_X_MAX": X_MAX,
    })
    operator = AssetRuntime(RuntimeSettings(
        asset_uuid=f"OPERATOR-{uuid.uuid4().hex[:8]}", transport_url=f"kafka://{kafka_broker.bootstrap}",
        transport_options=TransportOptions(topic=unique_topic, kafka_config=dict(KAFKA_TEST_CONFIG)),
        execute_commands=False))
    machine_log = TopicWatcher(kafka_broker.bootstrap, unique_topic, PARTITIONS, machine_uuid)
    supervisor_log = TopicWatcher(kafka_broker.bootstrap, unique_topic, PARTITIONS, supervisor_uuid)
    try:
        yield {"machine": machine_app, "supervisor": supervisor_app, "operator": operator,
               "machine_log": machine_log, "supervisor_log": supervisor_log,
               "barrier": CommandSender(kafka_broker.bootstrap, unique_topic, machine_uuid, "TEST-BARRIER")}
    finally:
        for runtime in (runtime_of(supervisor_app), runtime_of(machine_app), operator):
            runtime.stop(5.0)
        machine_log.close()
        supervisor_log.close()


def test_the_supervisor_reacts_within_one_second_and_homes_the_machine_once_per_excursion(
        plant: dict[str, Any]) -> None:
    machine, sup = runtime_of(plant["machine"]), runtime_of(plant["supervisor"])
    operator: AssetRuntime = plant["operator"]
    machine_log: TopicWatcher = plant["machine_log"]
    supervisor_log: TopicWatcher = plant["supervisor_log"]
    machine.start()
    sup.start()
    # The supervisor's subscription runs once its process holds the executor role and has read
    # the machine's state (position_x 0.0: in range, nothing to do).
    wait_for(lambda: (duties := sup.duties_state()) is not None and duties.runners, 20,
             "the supervisor's subscription running")
    assert sup.subscriptions_settled(20)

    def condition(seen: list[Seen]) -> list[Seen]:
        return [s for s in seen if s.record.id == "position_x_range"]

    lags, homes_after = [], []
    for excursion in range(1, EXCURSIONS + 1):
        x = X_MAX + 50.0 * excursion
        _, result = operator.send_command(machine.asset_uuid, "move_axis", {"x": x, "y": 1.0}, wait=15)
        assert result is not None and result.status == "OK", result

        out = machine_log.wait(
            lambda seen, x=x: [s for s in seen if s.record.id == "position_x" and s.record.value == x],
            10, f"position_x {x} on the machine")[0]
        faults = supervisor_log.wait(
            lambda seen, excursion=excursion: (lambda f: f if len(f) >= excursion else None)(
                [s for s in condition(seen) if s.record.tag == "Fault"]),
            10, f"Fault number {excursion} on the supervisor")
        fault = faults[excursion - 1]
        lag = (stamped(fault) - stamped(out)).total_seconds()
        lags.append(lag)
        assert f"position_x {x:g} is outside" in str(fault.record.value), fault.record
        assert lag < REACTION_BOUND, (
            f"excursion {excursion}: the Fault was stamped {1000 * lag:.0f} ms after the out-of-range position "
            f"(acceptance: within {REACTION_BOUND:g} s)")

        # home() ran (position_x back to 0.0 after the excursion), then the condition is Normal again.
        back = machine_log.wait(
            lambda seen, out=out: [s for s in seen if s.record.id == "position_x" and s.record.value == 0.0
                                   and (s.partition, s.offset) > (out.partition, out.offset)],
            15, f"the machine homed after excursion {excursion}")[0]
        homes_after.append((stamped(back) - stamped(out)).total_seconds())
        supervisor_log.wait(
            lambda seen, fault=fault: [s for s in condition(seen) if s.record.tag == "Normal"
                                       and (s.partition, s.offset) > (fault.partition, fault.offset)],
            15, f"the condition Normal again after excursion {excursion}")

    # No more commands from the supervisor; every home() it sent is answered; then count.
    sup.stop(5.0)
    home_commands = [s for s in machine_log.seen if s.record.id == "home_CMD"]
    machine_log.wait(lambda seen: len(machine_log.results("home")) >= len(home_commands), 15,
                     "a result for every home command")
    machine.stop(5.0)
    machine_log.barrier(plant["barrier"])  # everything the machine wrote is read
    homes = machine_log.results("home")
    print(f"\nsupervisor reaction (Fault stamp - out-of-range position stamp): "
          f"{', '.join(f'{1000 * lag:.0f} ms' for lag in lags)}; machine back at 0 "
          f"{', '.join(f'{1000 * t:.0f} ms' for t in homes_after)} after each excursion")
    assert len(home_commands) == EXCURSIONS, f"{len(home_commands)} home commands for {EXCURSIONS} excursions"
    assert len(homes) == EXCURSIONS and all(len(answers) == 1 for answers in homes.values()), homes
    assert [(result.status, result.sender_uuid) for answers in homes.values() for _, result in answers] == [
        ("OK", sup.asset_uuid)] * EXCURSIONS, homes
    levels = [s.record.tag for s in condition(supervisor_log.seen)]
    assert levels == ["Normal"] + ["Fault", "Normal"] * EXCURSIONS, levels
    xs = [s.record.value for s in machine_log.values("position_x")]
    assert xs == [0.0] + [v for e in range(1, EXCURSIONS + 1) for v in (X_MAX + 50.0 * e, 0.0)], xs
