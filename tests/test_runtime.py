"""The runtime over the memory transport: state, dispatch, dedupe, takeover."""

import json
import threading
import uuid

import pytest

from flask_openfactory import ConditionAttribute, EventAttribute, SampleAttribute, ofa_method
from flask_openfactory.runtime import AssetRuntime, RuntimeSettings
from flask_openfactory.transports.memory import memory_log
from flask_openfactory.wire.commands import CommandResult, command_record, new_envelope, result_record
from flask_openfactory.wire.methods import spec_of
from harness.waiting import wait_for

calls: list = []
release = threading.Event()


@ofa_method()
def move(x: float, speed: int = 100) -> dict:
    calls.append(("move", x, speed))
    return {"x": x}


@ofa_method()
def fail() -> None:
    raise RuntimeError("spindle jammed")


@ofa_method()
def slow() -> str:
    release.wait(10)
    return "done"


@pytest.fixture
def log_name():
    calls.clear()
    release.clear()
    return f"rt-{uuid.uuid4()}"


def make(log_name, *, uuid_="MACHINE", start=True, **overrides):
    settings = RuntimeSettings(asset_uuid=uuid_, transport_url=f"memory://{log_name}", **overrides)
    runtime = AssetRuntime(settings)
    runtime.declare_attribute(SampleAttribute("x", tag="X", default=0.0))
    runtime.declare_attribute(EventAttribute("mode", tag="Mode", default="IDLE"))
    runtime.declare_attribute(ConditionAttribute("limit", default="OK"))
    for func in (move, fail, slow):
        runtime.declare_method(spec_of(func))
    if start:
        runtime.start()
    return runtime


@pytest.fixture
def runtimes():
    made = []
    yield made
    release.set()
    for runtime in made:
        runtime.stop(2.0)


def test_start_publishes_identity_methods_and_defaults(log_name, runtimes):
    runtimes.append(rt := make(log_name))
    state = rt.transport.snapshot("MACHINE")
    assert state["avail"].value == "AVAILABLE" and state["avail"].tag == "Availability"
    assert state["AssetType"].value == "OpenFactoryApp" and state["AssetType"].type == "OpenFactory"
    for attr in ("application_version", "application_manufacturer", "application_license",
                 "openfactory_version", "openfactory_manufacturer", "openfactory_license"):
        assert state[attr].type == "Events"
    assert state["openfactory_version"].value == "0.1.0"
    assert state["move"].type == "Method" and json.loads(state["move"].value)["arguments"][0]["name"] == "x"
    assert state["x"].value == 0.0 and state["mode"].value == "IDLE"


def test_restart_keeps_the_last_value_instead_of_the_default(log_name, runtimes):
    rt = make(log_name)
    rt.set("x", 12.5)
    rt.stop(2.0)
    runtimes.append(rt2 := make(log_name))
    assert rt2.get("x").value == 12.5
    assert rt2.transport.snapshot("MACHINE")["avail"].value == "AVAILABLE"


def test_stop_publishes_unavailable_unless_told_not_to(log_name):
    rt = make(log_name)
    rt.stop(2.0)
    assert rt.transport.snapshot("MACHINE")["avail"].value == "UNAVAILABLE"
    rt2 = make(log_name)
    rt2.stop(2.0, publish_unavailable=False)
    assert rt2.transport.snapshot("MACHINE")["avail"].value == "AVAILABLE"


def test_set_validates_values_and_levels(log_name, runtimes):
    runtimes.append(rt := make(log_name))
    with pytest.raises(ValueError, match="takes a number"):
        rt.set("x", "fast")
    with pytest.raises(KeyError, match="not declared"):
        rt.set("nope", 1)
    with pytest.raises(ValueError, match="level must be one of"):
        rt.set("limit", "bad", tag="Critical")
    record = rt.set("limit", "Overtravel", tag="Fault")
    assert (record.tag, record.type) == ("Fault", "Condition")
    with pytest.raises(ValueError, match="fixed tag"):
        rt.set("mode", "RUN", tag="Other")


def test_a_value_set_in_one_process_is_seen_by_another(log_name, runtimes):
    runtimes.append(a := make(log_name))
    runtimes.append(b := make(log_name))
    a.set("x", 42.0)
    wait_for(lambda: b.get("x").value == 42.0, timeout=1.0)


def test_a_value_written_while_a_process_reads_its_snapshot_is_not_missed(log_name, runtimes):
    """Another process writes just after this one read the log's state at start: its follower,
    opened before that read, applies the write (it opened after it once, and never saw it)."""
    runtimes.append(a := make(log_name))
    runtimes.append(b := make(log_name, start=False))
    read_state = b.transport.snapshot

    def snapshot_then_a_write(asset_uuid):
        state = read_state(asset_uuid)
        a.set("x", 7.0)
        return state

    b.transport.snapshot = snapshot_then_a_write
    b.start()
    b.sync()
    assert b.get("x").value == 7.0


def test_commands_ok_error_rejected(log_name, runtimes):
    runtimes.append(rt := make(log_name))
    _, ok = rt.send_command("MACHINE", "move", {"x": "1e3"}, wait=5)
    assert (ok.status, ok.result) == ("OK", {"x": 1000.0})
    assert calls == [("move", 1000.0, 100)]
    _, err = rt.send_command("MACHINE", "fail", wait=5)
    assert err.status == "ERROR" and "spindle jammed" in err.error
    _, rej = rt.send_command("MACHINE", "move", {"x": "2", "speed": "2.5"}, wait=5)
    assert rej.status == "REJECTED" and "speed" in rej.error
    _, unknown = rt.send_command("MACHINE", "teleport", wait=5)
    assert unknown.status == "REJECTED" and "unknown method" in unknown.error
    _, extra = rt.send_command("MACHINE", "move", {"x": "1", "z": "2"}, wait=5)
    assert extra.status == "REJECTED" and "unknown argument" in extra.error
    assert len(calls) == 1


def test_malformed_records_are_counted_and_do_not_stop_the_consumer(log_name, runtimes):
    runtimes.append(rt := make(log_name))
    log = memory_log(log_name)
    for value in (b"garbage", None, b"[]", b'{"ID": "move_CMD", "VALUE": "{}", "TYPE": "OpenFactory"}',
                  b'{"ID": "move_CMD", "VALUE": "not json", "TYPE": "OpenFactory"}'):
        log.append("MACHINE", value)
    log.append("OTHER", b'{"ID": "move_CMD", "VALUE": "x", "TYPE": "OpenFactory"}')
    _, ok = rt.send_command("MACHINE", "move", {"x": "5"}, wait=5)
    assert ok.status == "OK"
    assert rt.counters["records_malformed"] == 3
    assert rt.counters["commands_unanswerable"] == 2
    assert rt.counters["records_foreign"] == 1


def test_duplicate_correlation_id_runs_once(log_name, runtimes):
    runtimes.append(rt := make(log_name))
    env = new_envelope("CALLER", {"x": "7"})
    for _ in range(3):
        rt.transport.publish(command_record("MACHINE", "move", env))
    wait_for(lambda: rt.counters["commands_duplicate"] == 2)
    assert calls == [("move", 7.0, 100)]


def test_expired_commands_are_rejected_not_executed(log_name, runtimes):
    runtimes.append(rt := make(log_name, command_max_age=60))
    follower = rt.transport.follow("MACHINE")
    env = new_envelope("CALLER", {"x": "1"})
    old = env.__class__(env.correlation_id, env.sender_uuid, env.timestamp.replace(year=2020), None, env.arguments)
    rt.transport.publish(command_record("MACHINE", "move", old))
    result = wait_for(lambda: next((CommandResult.from_record(r) for r in follower.poll(0.1)
                                    if r.id == "move_RESULT"), None))
    assert result.status == "REJECTED" and result.error.startswith("expired")
    assert calls == []


def test_timeout_is_reported_as_error_and_the_next_command_runs(log_name, runtimes):
    runtimes.append(rt := make(log_name, command_timeout=0.3, command_concurrency=2))
    _, res = rt.send_command("MACHINE", "slow", wait=5)
    assert res.status == "ERROR" and "timed out" in res.error
    _, ok = rt.send_command("MACHINE", "move", {"x": "1"}, wait=5)
    assert ok.status == "OK"


def test_only_one_process_executes_and_another_takes_over(log_name, runtimes):
    a = make(log_name)
    b = make(log_name)
    runtimes.append(b)
    for i in range(20):
        a.send_command("MACHINE", "move", {"x": str(i)})
    wait_for(lambda: len(calls) == 20)
    standing_by = b.dispatcher_state()
    assert a.owns_command_log and standing_by is not None and not standing_by.owns
    a.stop(2.0)
    _, res = b.send_command("MACHINE", "move", {"x": "99"}, wait=5)
    assert res.status == "OK"
    assert [c[1] for c in calls] == [float(i) for i in range(20)] + [99.0]


def test_takeover_does_not_rerun_commands_whose_result_is_in_the_log(log_name, runtimes):
    """The previous owner ran a command and published its result, then died before committing."""
    log = memory_log(log_name)
    probe = make(log_name, start=False)
    reader = probe.transport.command_reader("MACHINE", "ofa-app-MACHINE")
    reader.poll(0)  # first owner: commits the current end
    reader.close()
    done = new_envelope("CALLER", {"x": "1"})
    pending = new_envelope("CALLER", {"x": "2"})
    for env in (done, pending):
        probe.transport.publish(command_record("MACHINE", "move", env))
    probe.transport.publish(result_record("MACHINE", CommandResult("move", done.correlation_id, "CALLER", "OK")))
    runtimes.append(rt := make(log_name))
    wait_for(lambda: calls)
    wait_for(lambda: rt.counters["commands_duplicate"] >= 1)
    assert calls == [("move", 2.0, 100)]
    assert len(log.entries) > 0


def test_fork_child_starts_its_own_runtime(log_name, runtimes, tmp_path):
    import os

    settings = RuntimeSettings(asset_uuid="FORKED", transport_url=f"sqlite:///{tmp_path}/f.db")
    rt = AssetRuntime(settings)
    rt.declare_attribute(SampleAttribute("x", tag="X", default=0.0))
    rt.start()
    runtimes.append(rt)
    parent_transport = rt.transport
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's transport
        report = "child did not finish"
        try:
            assert not rt.started
            rt.start()
            assert rt.transport is not parent_transport
            rt.set("x", 7.0)
            report = "ok"
        except BaseException:  # the parent shows what went wrong in the child
            import traceback

            report = traceback.format_exc()
        finally:
            try:
                rt.stop(2.0, publish_unavailable=False)
            except BaseException:
                import traceback

                report += "\nstop: " + traceback.format_exc()
            os.write(write_fd, report.encode())
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        report = pipe.read().decode()
    os.waitpid(pid, 0)
    assert report == "ok", report
    wait_for(lambda: rt.get("x").value == 7.0, timeout=2.0)


def test_a_process_that_exits_without_gunicorn_hooks_publishes_unavailable(tmp_path):
    """``flask run`` or waitress: nothing calls stop(), the interpreter's exit does."""
    import subprocess
    import sys

    db = tmp_path / "exit.db"
    script = (
        "from flask_openfactory.runtime import AssetRuntime, RuntimeSettings\n"
        f"rt = AssetRuntime(RuntimeSettings(asset_uuid='EXIT', transport_url='sqlite:///{db}'))\n"
        "rt.start()\n"
        "assert rt.get('avail').value == 'AVAILABLE'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    from flask_openfactory.transports import create_transport

    assert create_transport(f"sqlite:///{db}").snapshot("EXIT")["avail"].value == "UNAVAILABLE"
