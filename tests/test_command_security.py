"""Command security end to end: signatures, replays, expiry, sender allow-list, secrets kept secret.

Real transports (memory and sqlite) and a started runtime executing commands;
the attacker is just another writer on the same log, as on the platform.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app_factory import build_app
from flask_openfactory import (
    AssetBlueprint,
    ConfigurationError,
    SampleAttribute,
    ofa_method,
)
from flask_openfactory.runtime import AssetRuntime, RuntimeSettings
from flask_openfactory.transports.base import Follower
from flask_openfactory.wire.commands import (
    COMMAND_TAG,
    CommandResult,
    Envelope,
    command_record,
    is_result,
    new_envelope,
    result_record,
)
from flask_openfactory.wire.methods import spec_of
from flask_openfactory.wire.protocol import OPENFACTORY, Record
from flask_openfactory.wire.signing import SigningKeys, canonical_message, sign_envelope
from harness.waiting import wait_for

SECRET = "factory-floor-shared-secret-0001"
MACHINE = "CNC-MACHINE-01"
CALLER = "HMI-CNC-9207"

calls: list[tuple[str, Any]] = []
release = threading.Event()


@ofa_method()
def move(x: float) -> dict[str, float]:
    calls.append(("move", x))
    return {"x": x}


@ofa_method()
def hold() -> str:
    calls.append(("hold", None))
    release.wait(10)
    return "released"


@pytest.fixture(params=["memory", "sqlite"])
def transport_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    calls.clear()
    release.clear()
    if request.param == "memory":
        return f"memory://security-{uuid.uuid4().hex}"
    return f"sqlite:///{tmp_path}/security.sqlite3"


@pytest.fixture
def runtimes() -> Iterator[list[AssetRuntime]]:
    made: list[AssetRuntime] = []
    yield made
    release.set()
    for runtime in made:
        runtime.stop(2.0)


def machine(url: str, runtimes: list[AssetRuntime], **overrides: Any) -> AssetRuntime:
    """The asset under attack, started: it executes commands."""
    overrides.setdefault("command_secret", SECRET)
    runtime = AssetRuntime(RuntimeSettings(asset_uuid=MACHINE, transport_url=url, **overrides))
    for func in (move, hold):
        runtime.declare_method(spec_of(func))
    runtime.start()
    runtimes.append(runtime)
    return runtime


def caller(url: str, runtimes: list[AssetRuntime], secret: str | None = SECRET) -> AssetRuntime:
    """Another asset on the same log that only sends commands (never started)."""
    runtime = AssetRuntime(RuntimeSettings(asset_uuid=CALLER, transport_url=url, command_secret=secret,
                                           execute_commands=False))
    runtimes.append(runtime)
    return runtime


class Results:
    """Every ``_RESULT`` the machine publishes, by correlation id, in log order."""

    def __init__(self, follower: Follower) -> None:
        self._follower = follower
        self.seen: list[CommandResult] = []

    def _drain(self) -> None:
        self.seen += [CommandResult.from_record(r) for r in self._follower.poll(0.05) if is_result(r)]

    def of(self, cid: str) -> list[CommandResult]:
        return [r for r in self.seen if r.correlation_id == cid]

    def wait(self, cid: str, count: int = 1, timeout: float = 5.0) -> list[CommandResult]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._drain()
            if len(self.of(cid)) >= count:
                return self.of(cid)
        raise AssertionError(f"{count} result(s) for {cid} not seen within {timeout}s: {self.of(cid)}")

    def settle(self, seconds: float = 0.6) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._drain()


@pytest.fixture
def results(transport_url: str, runtimes: list[AssetRuntime]) -> Iterator[Results]:
    watcher = AssetRuntime(RuntimeSettings(asset_uuid="WATCHER", transport_url=transport_url,
                                           execute_commands=False))
    runtimes.append(watcher)
    follower = watcher.transport.follow(MACHINE)
    try:
        yield Results(follower)
    finally:
        follower.close()




def signed(arguments: dict[str, Any], *, method: str = "move", target: str = MACHINE,
           secret: str = SECRET, timestamp: datetime | None = None, sender: str = CALLER) -> Envelope:
    envelope = new_envelope(sender, arguments)
    if timestamp is not None:
        envelope = replace(envelope, timestamp=timestamp)
    return sign_envelope(envelope, target, method, secret)


def publish(runtime: AssetRuntime, envelope: Envelope | dict[str, Any], method: str = "move") -> None:
    if isinstance(envelope, Envelope):
        runtime.transport.publish(command_record(MACHINE, method, envelope))
    else:  # hand-written JSON, as a foreign asset would write it
        runtime.transport.publish(Record.create(MACHINE, method + "_CMD", json.dumps(envelope),
                                                tag=COMMAND_TAG, type=OPENFACTORY))


def one(results: Results, cid: str) -> CommandResult:
    (result,) = results.wait(cid)
    return result


# -- the acceptance criterion --------------------------------------------------------


def test_forged_replayed_expired_unsigned_are_rejected_with_distinct_reasons_and_never_run(
    transport_url: str, runtimes: list[AssetRuntime], results: Results
) -> None:
    rt = machine(transport_url, runtimes)
    attacker = caller(transport_url, runtimes, secret=None)

    genuine = signed({"x": "1"})
    publish(attacker, genuine)  # the attacker only copies a record it saw on the log
    assert one(results, genuine.correlation_id).status == "OK"
    assert calls == [("move", 1.0)]

    forged = replace(signed({"x": "2"}), arguments={"x": "666"})  # tampered after signing
    wrong_key = signed({"x": "3"}, secret="a guessed secret, long enough")
    replayed = genuine  # the very same record, written again
    expired = signed({"x": "4"}, timestamp=datetime.now(UTC) - timedelta(hours=1))
    unsigned = new_envelope(CALLER, {"x": "5"})
    for envelope in (forged, wrong_key, replayed, expired, unsigned):
        publish(attacker, envelope)

    reasons = {
        "forged": one(results, forged.correlation_id),
        "wrong_key": one(results, wrong_key.correlation_id),
        "replayed": results.wait(genuine.correlation_id, count=2)[1],
        "expired": one(results, expired.correlation_id),
        "unsigned": one(results, unsigned.correlation_id),
    }
    assert {name: r.status for name, r in reasons.items()} == dict.fromkeys(reasons, "REJECTED")
    assert reasons["forged"].error.startswith("bad_signature: ")
    assert reasons["wrong_key"].error.startswith("bad_signature: ")
    assert reasons["replayed"].error.startswith("replayed: ")
    assert reasons["expired"].error.startswith("expired: ")
    assert reasons["unsigned"].error.startswith("unsigned: ")
    assert calls == [("move", 1.0)]  # nothing but the genuine command ever ran
    counters = rt.counters
    assert (counters["rejected_bad_signature"], counters["rejected_replayed"], counters["rejected_expired"],
            counters["rejected_unsigned"]) == (2, 1, 1, 1)
    # The replay answer comes after the genuine one: a caller reading the first answer is not misled.
    assert results.of(genuine.correlation_id)[0].status == "OK"


def test_signed_command_from_another_asset_runs(transport_url: str, runtimes: list[AssetRuntime]) -> None:
    machine(transport_url, runtimes)
    cid, result = caller(transport_url, runtimes).send_command(MACHINE, "move", {"x": 7}, wait=5)
    assert result is not None and result.status == "OK" and result.result == {"x": 7.0}
    assert result.correlation_id == cid and calls == [("move", 7.0)]


def test_rotated_secret_old_signatures_still_verify(transport_url: str, runtimes: list[AssetRuntime]) -> None:
    machine(transport_url, runtimes, command_secret=["the new shared secret 2", SECRET])
    _, result = caller(transport_url, runtimes, secret=SECRET).send_command(MACHINE, "move", {"x": 1}, wait=5)
    assert result is not None and result.status == "OK"


# -- each check --------------------------------------------------------------------------


def test_signature_for_another_asset_or_method_is_bad(
    transport_url: str, runtimes: list[AssetRuntime], results: Results
) -> None:
    rt = machine(transport_url, runtimes)
    other_asset = signed({"x": "1"}, target="CNC-MACHINE-02")
    other_method = signed({}, method="hold")  # signed for hold, written as move_CMD
    publish(rt, other_asset)
    rt.transport.publish(command_record(MACHINE, "move", replace(other_method, arguments={"x": "1"})))
    for envelope in (other_asset, other_method):
        assert one(results, envelope.correlation_id).error.startswith("bad_signature: ")
    assert calls == []


def test_missing_or_epoch_timestamp_on_a_signed_command(
    transport_url: str, runtimes: list[AssetRuntime], results: Results
) -> None:
    rt = machine(transport_url, runtimes)
    cids = [str(uuid.uuid4()), str(uuid.uuid4())]
    signature = SigningKeys(SECRET).sign(b"whatever")
    publish(rt, {"header": {"correlation_id": cids[0], "sender_uuid": CALLER, "signature": signature},
                 "arguments": {"x": "1"}})
    publish(rt, {"header": {"correlation_id": cids[1], "sender_uuid": CALLER, "signature": signature,
                            "timestamp": time.time()}, "arguments": {"x": "1"}})
    for cid in cids:
        result = one(results, cid)
        assert result.status == "REJECTED" and result.error.startswith("missing_timestamp: ")
    assert rt.counters["rejected_missing_timestamp"] == 2 and calls == []


def test_signed_command_from_the_future_is_refused(
    transport_url: str, runtimes: list[AssetRuntime], results: Results
) -> None:
    rt = machine(transport_url, runtimes)
    ahead = signed({"x": "1"}, timestamp=datetime.now(UTC) + timedelta(minutes=10))
    within = signed({"x": "2"}, timestamp=datetime.now(UTC) + timedelta(seconds=5))
    publish(rt, ahead)
    publish(rt, within)
    assert one(results, ahead.correlation_id).error.startswith("from_the_future: ")
    assert one(results, within.correlation_id).status == "OK"  # clocks differ a little
    assert calls == [("move", 2.0)] and rt.counters["rejected_from_the_future"] == 1


def test_hand_written_signed_envelope_in_another_language_style_runs(
    transport_url: str, runtimes: list[AssetRuntime], results: Results
) -> None:
    """A foreign asset following the README: its own timestamp format, signed as written."""
    rt = machine(transport_url, runtimes)
    cid = str(uuid.uuid4())
    timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    message = canonical_message(target=MACHINE, method="move", correlation_id=cid, sender_uuid=CALLER,
                                timestamp=timestamp, arguments={"x": "12.5"})
    publish(rt, {"header": {"correlation_id": cid, "sender_uuid": CALLER, "timestamp": timestamp,
                            "signature": SigningKeys(SECRET).sign(message)}, "arguments": {"x": "12.5"}})
    assert one(results, cid).status == "OK" and calls == [("move", 12.5)]


def test_duplicate_of_a_running_command_is_suppressed_without_a_second_answer(
    transport_url: str, runtimes: list[AssetRuntime], results: Results
) -> None:
    """Answering REJECTED while the genuine command runs would be read as its answer."""
    rt = machine(transport_url, runtimes)
    envelope = signed({}, method="hold")
    publish(rt, envelope, method="hold")
    wait_for(lambda: calls)
    publish(rt, envelope, method="hold")
    wait_for(lambda: rt.counters["commands_duplicate"] == 1)
    release.set()
    assert [r.status for r in results.wait(envelope.correlation_id)] == ["OK"]
    results.settle()
    assert len(results.of(envelope.correlation_id)) == 1 and calls == [("hold", None)]


def test_forgery_reusing_a_known_correlation_id_gets_no_answer(
    transport_url: str, runtimes: list[AssetRuntime], results: Results
) -> None:
    rt = machine(transport_url, runtimes)
    genuine = signed({"x": "1"})
    publish(rt, genuine)
    one(results, genuine.correlation_id)
    publish(rt, replace(genuine, arguments={"x": "666"}))
    wait_for(lambda: rt.counters["rejected_bad_signature"] == 1)
    results.settle()
    assert [r.status for r in results.of(genuine.correlation_id)] == ["OK"]
    assert calls == [("move", 1.0)]


def test_redelivery_after_takeover_is_not_called_a_replay(
    transport_url: str, runtimes: list[AssetRuntime], results: Results
) -> None:
    """The previous owner answered but died before committing: the command is read again."""
    probe = caller(transport_url, runtimes)
    reader = probe.transport.command_reader(MACHINE, f"ofa-app-{MACHINE}")
    reader.poll(0)  # first owner: commits the current end
    reader.close()
    done, pending = signed({"x": "1"}), signed({"x": "2"})
    publish(probe, done)
    publish(probe, pending)
    probe.transport.publish(result_record(MACHINE, CommandResult("move", done.correlation_id, CALLER, "OK")))
    rt = machine(transport_url, runtimes)
    assert one(results, pending.correlation_id).status == "OK"
    wait_for(lambda: rt.counters["commands_duplicate"] == 1)
    results.settle()
    assert [r.status for r in results.of(done.correlation_id)] == ["OK"]
    assert rt.counters["rejected_replayed"] == 0 and calls == [("move", 2.0)]


def test_without_a_secret_duplicates_stay_silent_and_unsigned_commands_run(
    transport_url: str, runtimes: list[AssetRuntime], results: Results
) -> None:
    """Signing off: the contract's behaviour is unchanged."""
    rt = machine(transport_url, runtimes, command_secret=None)
    envelope = new_envelope(CALLER, {"x": "1"})
    publish(rt, envelope)
    one(results, envelope.correlation_id)
    publish(rt, envelope)
    wait_for(lambda: rt.counters["commands_duplicate"] == 1)
    results.settle()
    assert len(results.of(envelope.correlation_id)) == 1 and calls == [("move", 1.0)]


# -- sender allow-list --------------------------------------------------------------------


def test_allow_list_accepts_listed_senders_and_rejects_others(
    transport_url: str, runtimes: list[AssetRuntime], results: Results
) -> None:
    rt = machine(transport_url, runtimes, command_secret=None, allowed_senders=[CALLER, "MES"])
    listed = new_envelope(CALLER, {"x": "1"})
    other = new_envelope("INTRUDER", {"x": "2"})
    for envelope in (listed, other):
        publish(rt, envelope)
    assert one(results, listed.correlation_id).status == "OK"
    refused = one(results, other.correlation_id)
    assert refused.status == "REJECTED" and refused.sender_uuid == "INTRUDER"
    assert "'INTRUDER' may not command this asset" in refused.error
    assert calls == [("move", 1.0)] and rt.counters["rejected_sender_not_allowed"] == 1


def test_allow_list_with_signing_checks_the_signed_sender(
    transport_url: str, runtimes: list[AssetRuntime], results: Results
) -> None:
    rt = machine(transport_url, runtimes, allowed_senders=["MES"])
    mes = signed({"x": "1"}, sender="MES")
    hmi = signed({"x": "2"})  # genuinely signed, but not a listed sender
    impostor = replace(hmi, sender_uuid="MES")  # claims to be MES: the signature says otherwise
    for envelope in (mes, hmi, impostor):
        publish(rt, envelope)
    assert one(results, mes.correlation_id).status == "OK"
    wait_for(lambda: rt.counters["rejected_sender_not_allowed"] == 1)
    wait_for(lambda: rt.counters["rejected_bad_signature"] == 1)  # the impostor reuses hmi's id
    results.settle()
    assert [r.error.split(":")[0] for r in results.of(hmi.correlation_id)] == ["sender_not_allowed"]
    assert calls == [("move", 1.0)]


def test_empty_allow_list_refuses_everyone(
    transport_url: str, runtimes: list[AssetRuntime], results: Results
) -> None:
    rt = machine(transport_url, runtimes, command_secret=None, allowed_senders=[])
    envelope = new_envelope(MACHINE, {"x": "1"})
    publish(rt, envelope)
    assert one(results, envelope.correlation_id).error.startswith("sender_not_allowed: ")
    assert calls == []


# -- through Flask: config, CLI, status, readiness ---------------------------------------


def machine_blueprint() -> AssetBlueprint:
    bp = AssetBlueprint("machine", __name__)
    position = bp.attribute(SampleAttribute("position_x", tag="Position.X"))

    @bp.ofa_method()
    def move_axis(x: float) -> float:
        position.set(x)
        return x

    return bp


def make_app(url: str, **config: Any) -> Flask:
    return build_app(__name__, {"TESTING": True, "OPENFACTORY_APP_UUID": MACHINE, "OPENFACTORY_TRANSPORT_URL": url,
                                "OPENFACTORY_KSQLDB_URL": None, "OPENFACTORY_STOP_TIMEOUT": 2.0,
                                "OPENFACTORY_START_ON_REQUEST": False, **config},
                     blueprints=[machine_blueprint()])


@pytest.fixture
def serving() -> Iterator[Flask]:
    """The machine's serving process, signature checks on."""
    app = make_app(f"memory://security-cli-{uuid.uuid4().hex}", OPENFACTORY_COMMAND_SECRET=SECRET)
    runtime = app.extensions["openfactory"].runtime
    runtime.start()
    try:
        yield app
    finally:
        runtime.stop(2.0)


def test_flask_ofa_call_sends_signed_commands_that_run(serving: Flask) -> None:
    runtime = serving.extensions["openfactory"].runtime
    follower = runtime.transport.follow(MACHINE)
    try:
        result = serving.test_cli_runner().invoke(args=["ofa", "call", "move_axis", "x=10", "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["status"] == "OK" and report["result"] == 10.0 and report["signed"] is True
        commands = wait_for(lambda: [r for r in follower.poll(0.1) if r.id == "move_axis_CMD"])
    finally:
        follower.close()
    assert json.loads(commands[0].value)["header"]["signature"].startswith("v1=")
    assert SECRET not in result.output


def test_flask_ofa_call_from_an_app_without_the_secret_is_rejected_unsigned(serving: Flask) -> None:
    url = serving.config["OPENFACTORY_TRANSPORT_URL"]
    outsider = make_app(url)  # same asset and log, no secret configured
    result = outsider.test_cli_runner().invoke(args=["ofa", "call", "move_axis", "x=10", "--json"])
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    assert report["status"] == "REJECTED" and report["error"].startswith("unsigned: ")
    assert report["signed"] is False


def test_the_secret_is_never_shown(serving: Flask) -> None:
    runtime = serving.extensions["openfactory"].runtime
    other_secret = "second-rotation-secret-value"
    dispatcher = runtime.dispatcher_state()
    assert dispatcher is not None
    assert SECRET not in repr(runtime.settings) and SECRET not in repr(dispatcher.settings)
    status = serving.test_cli_runner().invoke(args=["ofa", "status", "--json"])
    assert status.exit_code == 0, status.output
    text = serving.test_cli_runner().invoke(args=["ofa", "status"])
    ready = serving.test_client().get("/ofa/ready")
    assert ready.status_code == 200
    for shown in (status.output, text.output, ready.get_data(as_text=True), json.dumps(runtime.status())):
        assert SECRET not in shown
    settings = RuntimeSettings(asset_uuid="X", transport_url="memory://x", command_secret=[SECRET, other_secret])
    assert SECRET not in repr(settings) and other_secret not in repr(settings)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("OPENFACTORY_COMMAND_SECRET", "short", "at least 16 characters"),
        ("OPENFACTORY_COMMAND_SECRET", 12345678901234567890, "must be a string"),
        ("OPENFACTORY_COMMAND_SECRET", SECRET + "\n", "white space"),
        ("OPENFACTORY_COMMAND_SECRET", [SECRET, 5], "OPENFACTORY_COMMAND_SECRET[1] must be a string"),
        ("OPENFACTORY_COMMAND_SECRET", {"k1": SECRET}, "a string or a list of strings"),
        ("OPENFACTORY_ALLOWED_SENDERS", 42, "list of sender UUIDs"),
        ("OPENFACTORY_ALLOWED_SENDERS", ["MES", ""], "non-empty strings"),
        ("OPENFACTORY_ALLOWED_SENDERS", [None], "non-empty strings"),
    ],
)
def test_config_errors_name_the_key_and_never_quote_the_secret(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=key.replace("[", r"\[")) as info:
        make_app("memory://config-check", **{key: value})
    assert message in str(info.value)
    assert SECRET not in str(info.value)


def test_config_accepts_lists_and_comma_separated_senders() -> None:
    app = make_app("memory://config-ok", OPENFACTORY_COMMAND_SECRET=[SECRET, SECRET + "-old"],
                   OPENFACTORY_ALLOWED_SENDERS=" MES, HMI-CNC-9207 ,")
    settings = app.extensions["openfactory"].runtime.settings
    assert isinstance(settings.command_secret, SigningKeys) and len(settings.command_secret) == 2
    assert settings.allowed_senders == frozenset({"MES", "HMI-CNC-9207"})
    defaults = make_app("memory://config-defaults").extensions["openfactory"].runtime.settings
    assert defaults.command_secret is None and defaults.allowed_senders is None
