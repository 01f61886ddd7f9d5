"""The supervisor example, tested with the testing kit as its author would."""

from __future__ import annotations

import json
import uuid

import pytest
from flask import Flask

import demo
import supervisor
from flask_openfactory import AssetRuntime, ConfigurationError
from flask_openfactory.testing import AssetRecords, OpenFactoryTester
from harness.waiting import wait_for

MACHINE = "CNC-7"


@pytest.fixture
def ofa_app() -> Flask:
    return supervisor.create_app("testing", {"SUPERVISOR_MACHINE_UUID": MACHINE,
                                             "SUPERVISOR_X_MIN": -10.0, "SUPERVISOR_X_MAX": 10.0})


@pytest.fixture
def machine(ofa: OpenFactoryTester) -> AssetRecords:
    """The machine's key: where the supervisor writes its commands."""
    return ofa.follow(MACHINE)


def conditions(ofa: OpenFactoryTester) -> list[tuple[str, str]]:
    return [(r.tag, str(r.value)) for r in ofa.records("position_x_range")]


def test_out_of_range_raises_the_fault_and_homes_the_machine_once(ofa, machine, ofa_runtime: AssetRuntime):
    ofa.feed(MACHINE, "position_x", 50.0)
    ofa.assert_published("position_x_range", tag="Fault", type="Condition",
                         value="position_x 50 is outside [-10, 10]")
    (home,) = machine.commands("home")
    header = json.loads(str(home.value))["header"]
    assert header["sender_uuid"] == ofa_runtime.asset_uuid == "SUPERVISOR-DEV"
    assert machine.commands() == [home]  # nothing else was sent

    ofa.feed(MACHINE, "position_x", 60.0)  # still out: the same excursion
    ofa.feed(MACHINE, "position_x", -30.0)
    assert len(machine.commands("home")) == 1
    assert conditions(ofa) == [("Normal", "in range"), ("Fault", "position_x 50 is outside [-10, 10]")]


def test_back_in_range_clears_and_a_second_excursion_homes_again(ofa, machine):
    ofa.feed(MACHINE, "position_x", 11.0)
    ofa.feed(MACHINE, "position_x", 0.0)
    assert conditions(ofa)[-1] == ("Normal", "in range")
    assert len(machine.commands("home")) == 1
    ofa.feed(MACHINE, "position_x", -10.5)
    assert conditions(ofa)[1:] == [("Fault", "position_x 11 is outside [-10, 10]"), ("Normal", "in range"),
                                   ("Fault", "position_x -10.5 is outside [-10, 10]")]
    assert len(machine.commands("home")) == 2


def test_the_range_bounds_are_in_range(ofa, machine):
    ofa.feed(MACHINE, "position_x", 10.0)
    ofa.feed(MACHINE, "position_x", -10)
    ofa.assert_not_published("position_x_range", tag="Fault")
    assert machine.commands() == []


def test_unavailable_and_other_attributes_are_ignored(ofa, machine):
    ofa.feed(MACHINE, "position_x", 50.0)
    assert len(machine.commands("home")) == 1
    ofa.clear()  # the app's records and the machine's: look only at what comes next
    ofa.feed(MACHINE, "position_x", "UNAVAILABLE")
    ofa.feed(MACHINE, "position_y", 500.0)
    ofa.feed(MACHINE, "position_x", True)  # not a number either
    assert ofa.records("position_x_range") == []  # the Fault stays as it was, nothing new
    assert machine.commands() == []
    assert ofa.runtime.counters["subscription_handler_errors"] == 0  # ignored, not crashed on
    assert ofa.runtime.value("position_x_range") == "position_x 50 is outside [-10, 10]"


def test_a_machine_out_of_range_before_the_start_is_homed_at_the_start(ofa_app):
    tester = OpenFactoryTester(ofa_app)
    tester.feed(MACHINE, "position_x", 500.0)  # the machine's current state when the supervisor starts
    with tester as ofa:
        ofa.assert_published("position_x_range", tag="Fault")
        machine_log = ofa.runtime.transport.snapshot(MACHINE)
        assert machine_log["home_CMD"].asset_uuid == MACHINE


@pytest.mark.parametrize("low, high", [(10, 10), (5.0, -5.0), ("0", 10), (0, None), (True, 10)])
def test_a_bad_range_fails_at_create_app(low, high):
    with pytest.raises(ConfigurationError, match=r"SUPERVISOR_X_MIN and SUPERVISOR_X_MAX must be numbers "
                                                 r"with MIN < MAX, got "):
        supervisor.create_app("testing", {"SUPERVISOR_X_MIN": low, "SUPERVISOR_X_MAX": high})


def test_with_the_demo_machine_on_one_log_home_runs_once_per_excursion():
    url = f"memory://plant-{uuid.uuid4()}"
    machine_uuid, supervisor_uuid = f"CNC-{uuid.uuid4().hex[:8]}", f"SUP-{uuid.uuid4().hex[:8]}"
    machine_app = demo.create_app("testing", {"OPENFACTORY_TRANSPORT_URL": url,
                                              "OPENFACTORY_APP_UUID": machine_uuid})
    supervisor_app = supervisor.create_app("testing", {
        "OPENFACTORY_TRANSPORT_URL": url, "OPENFACTORY_APP_UUID": supervisor_uuid,
        "SUPERVISOR_MACHINE_UUID": machine_uuid, "SUPERVISOR_X_MIN": -100.0, "SUPERVISOR_X_MAX": 100.0})
    with OpenFactoryTester(machine_app) as cnc, OpenFactoryTester(supervisor_app) as sup:
        for excursion, x in enumerate([150.0, -120.0], start=1):
            assert cnc.call("move_axis", x=x, y=5).status == "OK"
            # The supervisor sees the move, commands home(), the machine runs it, the supervisor sees 0.0.
            wait_for(lambda excursion=excursion: conditions(sup)[-1] == ("Normal", "in range")
                     and len(conditions(sup)) == 1 + 2 * excursion,
                     what=f"excursion {excursion}: Fault then Normal on the supervisor")
            sup.settle()  # every update of the machine handled: no late second home()
            homes = cnc.results("home")
            assert [(r.status, r.sender_uuid) for r in homes] == [("OK", supervisor_uuid)] * excursion
            assert len([r for r in cnc.records("home_CMD")]) == excursion
        assert cnc.values("position_x") == [0.0, 150.0, 0.0, -120.0, 0.0]
        assert [tag for tag, _ in conditions(sup)] == ["Normal", "Fault", "Normal", "Fault", "Normal"]
