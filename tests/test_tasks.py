"""Background tasks: one executing process, app context, stop signal, restarts, takeover."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest
from flask import Flask, current_app

from app_factory import build_app
from flask_openfactory import AssetBlueprint, StopSignal
from flask_openfactory.runtime.tasks import background_task
from flask_openfactory.testing import runtime_of
from harness.waiting import wait_for


def make_app(url: str, blueprint: AssetBlueprint, **config: Any) -> Flask:
    return build_app(__name__, {"OPENFACTORY_APP_UUID": "TASKS-APP", "OPENFACTORY_TRANSPORT_URL": url,
                                "OPENFACTORY_STOP_TIMEOUT": 3.0, **config},
                     blueprints=[blueprint], constructor=True)


@pytest.fixture
def url() -> str:
    return f"memory://tasks-{uuid.uuid4()}"


def task_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(("ofa-task", "ofa-duties", "ofa-watch"))]


class Probe:
    """What a task saw, shared between the test and the task's thread."""

    def __init__(self) -> None:
        self.runs: list[str] = []  # the app each run saw through current_app
        self.ticks = 0
        self.stopped = threading.Event()
        self.fail_first = 0


def ticking_blueprint(probe: Probe, *, name: str = "tasks") -> AssetBlueprint:
    bp = AssetBlueprint(name, __name__)

    @bp.background_task(backoff=0.05, max_backoff=0.2, healthy_after=0.3)
    def ticker(stop: StopSignal) -> None:
        probe.runs.append(current_app.import_name + ":" + current_app.config["OPENFACTORY_APP_UUID"])
        if probe.fail_first > 0:
            probe.fail_first -= 1
            raise RuntimeError(f"sensor offline ({probe.fail_first} more)")
        while not stop.wait(0.01):
            probe.ticks += 1
        probe.stopped.set()

    return bp


def test_a_task_runs_in_an_app_context_and_ends_on_stop(url: str) -> None:
    probe = Probe()
    app = make_app(url, ticking_blueprint(probe))
    runtime = runtime_of(app)
    runtime.start()
    wait_for(lambda: probe.ticks > 3, what="the task ticking")
    assert probe.runs == [f"{__name__}:TASKS-APP"]
    assert runtime.value("ticker_task") == "running"
    assert runtime.get("ticker_task").tag == "Normal"
    runtime.stop()
    assert probe.stopped.is_set()
    assert task_threads() == []


def test_a_raising_task_is_restarted_with_backoff_and_reports_its_condition(url: str) -> None:
    probe = Probe()
    probe.fail_first = 2
    app = make_app(url, ticking_blueprint(probe))
    runtime = runtime_of(app)
    runtime.start()
    try:
        wait_for(lambda: probe.ticks > 0, what="the task running after two failures")
        assert len(probe.runs) == 3
        record = runtime.get("ticker_task")
        assert (record.tag, record.value) == ("Fault", "RuntimeError: sensor offline (0 more)")
        assert runtime.counters["task_ticker_failures"] == 2
        # healthy_after=0.3 s of running clears the fault (checked by the supervisor every second)
        wait_for(lambda: runtime.get("ticker_task").tag == "Normal", timeout=5, what="the fault cleared")
        assert runtime.value("ticker_task") == "running"
    finally:
        runtime.stop()


def test_a_task_that_returns_is_not_restarted(url: str) -> None:
    bp = AssetBlueprint("once", __name__)
    runs: list[int] = []

    @bp.background_task()
    def once(stop: StopSignal) -> None:
        runs.append(1)

    runtime = runtime_of(make_app(url, bp))
    runtime.start()
    try:
        wait_for(lambda: runs, what="the task running")
        wait_for(lambda: not [t for t in threading.enumerate() if t.name == "ofa-task-once"],
                 what="the task's thread ending")
        assert runs == [1]
    finally:
        runtime.stop()


def test_async_tasks_wait_on_the_stop_signal_and_are_cancelled_after_the_grace(url: str) -> None:
    bp = AssetBlueprint("async_tasks", __name__)
    seen: dict[str, Any] = {"polite": 0, "stubborn_cancelled": False}

    @bp.background_task()
    async def polite(stop: StopSignal) -> None:
        assert current_app.config["OPENFACTORY_APP_UUID"] == "TASKS-APP"
        while not await stop.sleep(0.01):
            seen["polite"] += 1
        seen["polite_done"] = True

    @bp.background_task()
    async def stubborn(stop: StopSignal) -> None:
        try:
            await asyncio.sleep(3600)  # ignores the signal
        except asyncio.CancelledError:
            seen["stubborn_cancelled"] = True
            raise

    runtime = runtime_of(make_app(url, bp, OPENFACTORY_STOP_TIMEOUT=1.5))
    runtime.start()
    wait_for(lambda: seen["polite"] > 3, what="the async task ticking")
    runtime.stop()
    assert seen.get("polite_done") is True
    assert seen["stubborn_cancelled"] is True
    assert task_threads() == []


def test_only_the_executing_process_runs_a_task_and_it_moves_on_takeover(url: str) -> None:
    """Two runtimes of one app on one log behave like two workers."""
    probe = Probe()
    first = runtime_of(make_app(url, ticking_blueprint(probe)))
    second = runtime_of(make_app(url, ticking_blueprint(probe, name="tasks2")))
    first.start()
    second.start()
    try:
        wait_for(lambda: probe.ticks > 3, what="the task ticking")
        assert len(probe.runs) == 1
        owner, other = (first, second) if first.owns_command_log else (second, first)
        owner.stop()
        assert probe.stopped.is_set()
        wait_for(lambda: len(probe.runs) == 2, what="the task starting in the other runtime")
        assert other.owns_command_log
    finally:
        first.stop()
        second.stop()


def test_no_task_runs_where_commands_are_not_executed(url: str) -> None:
    probe = Probe()
    runtime = runtime_of(make_app(url, ticking_blueprint(probe), OPENFACTORY_EXECUTE_COMMANDS=False))
    runtime.start()
    try:
        assert runtime.duties_state() is None
        assert "ofa-task-ticker" not in task_threads()
    finally:
        runtime.stop()
    assert probe.runs == []


def test_tasks_run_on_the_sqlite_transport_too(tmp_path) -> None:
    probe = Probe()
    runtime = runtime_of(make_app(f"sqlite:///{tmp_path / 'log.sqlite3'}", ticking_blueprint(probe),
                                  OPENFACTORY_LOCK_DIR=str(tmp_path)))
    runtime.start()
    try:
        wait_for(lambda: probe.ticks > 3, what="the task ticking on sqlite")
    finally:
        runtime.stop()
    assert probe.stopped.is_set()


@pytest.mark.parametrize(
    ("decorate", "error", "text"),
    [
        (lambda: background_task("t")(lambda: None), TypeError, "exactly one argument"),
        (lambda: background_task("t", backoff=0)(lambda stop: None), ValueError, "backoff"),
        (lambda: background_task("not a name")(lambda stop: None), ValueError, "task name.*name it with"),
        (lambda: background_task()(lambda stop: None), ValueError, "'<lambda>'.*name it with"),
        (lambda: background_task("t")(42), TypeError, "decorates a function"),
    ],
)
def test_bad_task_declarations_fail_at_import_with_a_clear_message(decorate, error, text) -> None:
    with pytest.raises(error, match=text):
        decorate()


def test_a_task_name_may_not_be_declared_twice_with_another_function(url: str) -> None:
    one, two = AssetBlueprint("one", __name__), AssetBlueprint("two", __name__)
    one.background_task("loop")(lambda stop: None)
    two.background_task("loop")(lambda stop: None)
    app = make_app(url, one)
    with pytest.raises(ValueError, match="background task 'loop' is declared twice"):
        app.register_blueprint(two)


def test_flask_ofa_status_lists_tasks_and_subscriptions_with_their_condition(url: str) -> None:
    probe = Probe()
    bp = ticking_blueprint(probe)
    bp.subscribe("MACHINE-1", attribute="position_x", name="x_watch")(lambda record: None)
    app = make_app(url, bp)
    runtime = runtime_of(app)
    runtime.start()
    try:
        wait_for(lambda: runtime.get("ticker_task") is not None, what="the task's condition published")
        result = app.test_cli_runner().invoke(args=["ofa", "status"])
    finally:
        runtime.stop()
    assert result.exit_code == 0, result.output
    assert "background tasks (1), in the process that executes commands:\n  ticker: Normal: running" in result.output, \
        result.output
    assert "x_watch: position_x of MACHINE-1 (executing process)" in result.output
