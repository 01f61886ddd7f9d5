"""The testing kit: the pytest plugin as a user meets it (through pytester), and the tester itself."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from flask import Flask

import demo
from app_factory import build_app
from flask_openfactory import AssetBlueprint, EventAttribute, Record
from flask_openfactory.testing import NoResultError, OpenFactoryTester
from readme import section_blocks

pytest_plugins = ["pytester"]



def readme_section_blocks() -> tuple[str, list[str]]:
    """The ``ini`` block and the ``python`` blocks of the README's "Testing your app" section."""
    blocks = section_blocks("Testing your app")
    ini = [body for lang, body in blocks if lang == "ini"]
    python = [body for lang, body in blocks if lang == "python"]
    assert len(ini) == 1 and len(python) >= 2, "the README's testing section lost its examples"
    return ini[0], python


@pytest.fixture
def ofa_app() -> Flask:
    return demo.create_app("testing")


# -- the plugin, as a user's test suite runs it ---------------------------------------------


def test_readme_examples_pass_through_the_plugin(pytester: pytest.Pytester) -> None:
    ini, examples = readme_section_blocks()
    first_test = [line for line in examples[0].splitlines() if line.strip()]
    assert len(ini.strip().splitlines()) + len(first_test) < 10  # the "under ten lines"
    pytester.makefile(".ini", pytest=ini)
    pytester.makepyfile(**{f"test_readme_{i}": body for i, body in enumerate(examples)})
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=len(examples))


def test_a_failing_assertion_says_what_was_published(pytester: pytest.Pytester) -> None:
    pytester.makefile(".ini", pytest="[pytest]\nopenfactory_app = demo:create_app\n")
    pytester.makepyfile(test_wrong="""
        def test_wrong_position(ofa):
            assert ofa.call("move_axis", x=10, y=20).status == "OK"
            ofa.assert_published("position_x", value=99.0)

        def test_unknown_attribute(ofa):
            ofa.assert_published("temperature")
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*AssertionError: 'position_x' was not published with value=99.0 on asset 'DEV-UUID'.",
        "*Written for 'position_x' (2 record(s), oldest first):",
        "*0.0  (type Samples, tag 'Position.X', at *",
        "*10.0  (type Samples, tag 'Position.X', at *",
    ])
    result.stdout.fnmatch_lines(["*Nothing was written for 'temperature'. IDs written: *position_x*"])


def test_every_fixture_and_a_conftest_override(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        import pytest
        import demo

        @pytest.fixture
        def ofa_app():
            return demo.create_app("testing", {"OPENFACTORY_APP_UUID": "CNC-42"})
    """)
    pytester.makepyfile(test_fixtures="""
        def test_fixtures(ofa_app, ofa, ofa_runtime, ofa_client, ofa_cli):
            assert ofa.app is ofa_app and ofa_runtime is ofa.runtime and ofa_runtime.started
            assert ofa_runtime.asset_uuid == "CNC-42"
            assert ofa_client.post("/ofa/methods/home", json={}).json["status"] == "OK"
            outcome = ofa_cli.invoke(args=["ofa", "call", "move_axis", "x=3", "y=4"])
            assert outcome.exit_code == 0, outcome.output
            assert ofa.values("position_x") == [0.0, 0.0, 3.0]
            assert [r.status for r in ofa.results()] == ["OK", "OK"]
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_factory_gets_the_configured_config_name(pytester: pytest.Pytester) -> None:
    pytester.makefile(".ini", pytest="[pytest]\nopenfactory_app = demo:create_app\nopenfactory_config = development\n")
    pytester.makepyfile(test_config="""
        def test_config(ofa_app):
            assert ofa_app.config["OPENFACTORY_CONFIG_NAME"] == "development"
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_without_an_app_the_fixtures_say_how_to_name_one(pytester: pytest.Pytester) -> None:
    pytester.makefile(".ini", pytest="[pytest]\n")
    pytester.makepyfile(test_none="""
        def test_none(ofa):
            pass

        def test_unrelated():
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*set 'openfactory_app = package:create_app' in the pytest configuration*"])


def test_a_bad_app_name_is_a_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".ini", pytest="[pytest]\nopenfactory_app = demo:no_such_factory\n")
    pytester.makepyfile(test_bad="def test_bad(ofa):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*openfactory_app = demo:no_such_factory: module 'demo' has no no_such_factory*"])


def test_importing_the_plugin_starts_nothing_and_loads_no_client_library() -> None:
    # Every pytest run of an environment with the package installed loads the plugin.
    code = ("import sys, threading, flask_openfactory.pytest_plugin; "
            "print(threading.active_count(), sorted(m for m in sys.modules if m.split('.')[0] in "
            "('confluent_kafka', 'requests', 'flask_smorest', 'prometheus_client', 'sqlite3', 'hypothesis') "
            "or m == 'flask_openfactory.testing'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1 []"


# -- the tester ---------------------------------------------------------------------------


def test_call_returns_ok_error_and_rejected_results(ofa: OpenFactoryTester) -> None:
    ok = ofa.call("move_axis", x=10, y=20, speed=50)
    assert (ok.status, ok.result, ok.error) == ("OK", {"x": 10.0, "y": 20.0, "speed": 50}, None)
    assert ok.sender_uuid == "PYTEST"
    error = ofa.call("move_axis", x=1, y=2, speed=-1)
    assert (error.status, error.error) == ("ERROR", "ValueError: speed must be positive, got -1")
    rejected = ofa.call("move_axis", x="far", y=2)
    assert rejected.status == "REJECTED" and "x" in (rejected.error or "")
    assert ofa.call("no_such_method").status == "REJECTED"
    assert [r.status for r in ofa.results("move_axis")] == ["OK", "ERROR", "REJECTED"]
    assert [r.id for r in ofa.records(type="OpenFactory") if r.id.startswith("move_axis_")] == [
        "move_axis_CMD", "move_axis_RESULT"] * 3


def test_command_goes_through_the_log_with_the_chosen_sender(ofa: OpenFactoryTester) -> None:
    result = ofa.command("home", {}, sender_uuid="HMI-7")
    assert result.status == "OK" and result.sender_uuid == "HMI-7"
    (cmd,) = ofa.records("home_CMD")
    assert json.loads(str(cmd.value))["header"]["sender_uuid"] == "HMI-7"


def test_no_result_fails_naming_the_method() -> None:
    app = demo.create_app("testing", {"OPENFACTORY_EXECUTE_COMMANDS": False})
    with OpenFactoryTester(app) as ofa:
        with pytest.raises(NoResultError, match=r"no home_RESULT on asset 'DEV-UUID' within 0.2s .*home\(\)"):
            ofa.call("home", timeout=0.2)
        with pytest.raises(TimeoutError, match="move_axis_RESULT"):
            ofa.call("move_axis", x=1, y=2, timeout=0.2)


def test_records_start_with_the_identity_the_runtime_published(ofa: OpenFactoryTester) -> None:
    assert ofa.values("avail") == ["AVAILABLE"]
    assert ofa.last("AssetType").value == "OpenFactoryApp"  # type: ignore[union-attr]
    assert [r.id for r in ofa.records(type="Method")] == ["move_axis", "home"]
    assert ofa.values("status") == ["READY"]


def test_assert_published_matches_value_type_tag_and_predicates(ofa: OpenFactoryTester) -> None:
    ofa.call("move_axis", x=10, y=20)
    record = ofa.assert_published("position_x", value=10.0, type="Samples", tag="Position.X")
    assert record.value == 10.0
    ofa.assert_published("position_x", value=10)  # 10 == 10.0 on the wire
    ofa.assert_published("position_y", value=lambda v: v > 15)
    with pytest.raises(AssertionError, match="tag='Position.Y'"):
        ofa.assert_published("position_x", value=10.0, tag="Position.Y")
    with pytest.raises(AssertionError, match="type='Events'"):
        ofa.assert_published("position_x", type="Events")
    ofa.assert_published("status", value="ACTIVE")
    with pytest.raises(AssertionError, match="value=True"):
        ofa.assert_published("position_x", value=True)


def test_assert_published_failure_lists_what_was_written(ofa: OpenFactoryTester) -> None:
    ofa.call("move_axis", x=1, y=2)
    ofa.call("move_axis", x=3, y=4)
    with pytest.raises(AssertionError) as failure:
        ofa.assert_published("position_x", value=5.0)
    lines = str(failure.value).splitlines()
    assert lines[0] == "'position_x' was not published with value=5.0 on asset 'DEV-UUID'."
    assert lines[1] == "Written for 'position_x' (3 record(s), oldest first):"
    assert [line.split()[0] for line in lines[2:]] == ["0.0", "1.0", "3.0"]
    with pytest.raises(AssertionError, match=r"Nothing was written for 'temprature'\. IDs written: .*position_x"):
        ofa.assert_published("temprature")


def test_clear_and_assert_not_published(ofa: OpenFactoryTester) -> None:
    ofa.call("move_axis", x=1, y=2)
    with pytest.raises(AssertionError, match=r"'position_x' was published with any value .* 2 time\(s\)"):
        ofa.assert_not_published("position_x")
    ofa.clear()
    ofa.assert_not_published("position_x")
    assert ofa.records() == []
    ofa.call("home")
    assert ofa.values("position_x") == [0.0]
    ofa.assert_not_published("position_x", value=1.0)


def test_the_tester_stops_only_a_runtime_it_started() -> None:
    app = demo.create_app("testing")
    with OpenFactoryTester(app) as ofa:
        assert ofa.runtime.started
    assert not ofa.runtime.started and not ofa.started
    ofa.runtime.start()
    try:
        with OpenFactoryTester(app) as again:
            assert again.call("home").status == "OK"
        assert app.extensions["openfactory"].runtime.started
    finally:
        app.extensions["openfactory"].runtime.stop()


# -- feeding subscriptions ----------------------------------------------------------------

WATCHED = "PRESS-7"


def press_watcher(seen: list[Record], **config: object) -> Flask:
    """A small app that mirrors the press's state into its own attribute."""
    bp = AssetBlueprint(f"press-{uuid.uuid4().hex[:8]}", __name__)
    mirror = bp.attribute(EventAttribute("press_state", tag="Press.State", default="UNKNOWN"))
    lock = threading.Lock()

    @bp.subscribe(WATCHED, attribute="state")
    def on_state(record: Record) -> None:
        with lock:
            seen.append(record)
        mirror.set(str(record.value))

    return build_app(__name__, {"OPENFACTORY_APP_UUID": "WATCHER",
                                "OPENFACTORY_TRANSPORT_URL": f"memory://kit-{uuid.uuid4()}", **config},
                     blueprints=[bp], constructor=True)


def test_feed_returns_once_the_subscription_handled_the_update() -> None:
    seen: list[Record] = []
    with OpenFactoryTester(press_watcher(seen)) as ofa:
        fed = ofa.feed(WATCHED, "state", "CLAMPED", type="Events", tag="Execution")
        assert seen == [fed]
        ofa.assert_published("press_state", value="CLAMPED")  # what the handler published, at once
        ofa.feed(WATCHED, "pressure", 3.5)  # another attribute: not for this subscription
        ofa.feed(WATCHED, "state", "OPEN", type="Events")
        assert [r.value for r in seen] == ["CLAMPED", "OPEN"]
        assert ofa.values("press_state") == ["UNKNOWN", "CLAMPED", "OPEN"]


def test_feed_many_then_one_wait() -> None:
    seen: list[Record] = []
    with OpenFactoryTester(press_watcher(seen)) as ofa:
        ofa.feed_many(WATCHED, [("state", "A"), ("state", "B"), ("state", "C")], type="Events")
        assert [r.value for r in seen] == ["A", "B", "C"]


def test_feed_before_the_start_is_the_current_state_subscriptions_begin_with() -> None:
    seen: list[Record] = []
    ofa = OpenFactoryTester(press_watcher(seen))
    ofa.feed(WATCHED, "state", "CLAMPED", type="Events")
    assert seen == []
    with ofa:
        assert [r.value for r in seen] == ["CLAMPED"]
        ofa.assert_published("press_state", value="CLAMPED")


def test_feed_fails_clearly_when_the_subscriptions_cannot_run_here() -> None:
    seen: list[Record] = []
    tester = OpenFactoryTester(press_watcher(seen, OPENFACTORY_EXECUTE_COMMANDS=False), timeout=0.2)
    with tester as ofa:
        with pytest.raises(AssertionError, match=r"subscription\(s\) on_state of asset 'WATCHER' are not running"):
            ofa.feed(WATCHED, "state", "CLAMPED", type="Events")
    assert seen == []


# -- beyond the memory transport ----------------------------------------------------------


@pytest.fixture(params=["sqlite", "kafka"])
def transport_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, object]:
    if request.param == "sqlite":
        return {"OPENFACTORY_TRANSPORT_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}",
                "OPENFACTORY_LOCK_DIR": str(tmp_path)}
    from harness.broker import unique_topic_name
    from kafka_config import KAFKA_TEST_CONFIG

    broker = request.getfixturevalue("kafka_broker")
    topic = unique_topic_name("kit")
    broker.create_topic(topic, 3)
    return {"OPENFACTORY_TRANSPORT_URL": f"kafka://{broker.bootstrap}", "OPENFACTORY_ASSETS_TOPIC": topic,
            "OPENFACTORY_KAFKA_CONFIG": dict(KAFKA_TEST_CONFIG), "OPENFACTORY_KSQLDB_URL": None,
            "OPENFACTORY_LOCK_DIR": str(tmp_path), "OPENFACTORY_STOP_TIMEOUT": 5.0}


def test_the_tester_works_on_sqlite_and_kafka(transport_config: dict[str, object]) -> None:
    import supervisor

    machine_uuid = f"CNC-{uuid.uuid4().hex[:8]}"
    watcher = supervisor.create_app("testing", {**transport_config, "OPENFACTORY_APP_UUID": f"SUP-{machine_uuid}",
                                                "SUPERVISOR_MACHINE_UUID": machine_uuid})
    with OpenFactoryTester(watcher) as ofa:
        machine = ofa.follow(machine_uuid)
        ofa.feed(machine_uuid, "position_x", 500.0)
        ofa.assert_published("position_x_range", tag="Fault", timeout=5.0)
        machine.assert_published("home_CMD", timeout=5.0)
    with OpenFactoryTester(demo.create_app("testing", {**transport_config,
                                                       "OPENFACTORY_APP_UUID": machine_uuid})) as cnc:
        assert cnc.call("move_axis", x=3, y=4).status == "OK"
        cnc.assert_published("position_x", value=3.0)  # read up to the result: no waiting needed
        assert cnc.values("status") == ["READY", "ACTIVE", "READY"]
