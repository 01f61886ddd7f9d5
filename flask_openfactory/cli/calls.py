"""``flask ofa call`` and ``result``: call a method through the log as another asset would, read an answer back.

Exit codes: 0 OK, 1 ERROR, 2 REJECTED, 3 no result in time (``result``: not
answered yet), 4 bad usage, 5 the transport failed, 6 sent to an asset that
does not answer with results.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import click

from ..wire.answering import NO_RESULT_TEXT
from ..wire.commands import NO_RESULT, OK, CommandResult
from ..wire.protocol import validate_identifier
from .deadline import CHECK_TIMEOUT, GRACE, SEND_GRACE, Deadline, Session
from .group import (
    EXIT_ERROR,
    EXIT_NO_RESULT,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_TRANSPORT,
    EXIT_USAGE,
    STATUS_EXIT,
    current_runtime,
    fail,
    ofa_cli,
)
from .masking import one_line
from .tables import dump
from .transport_checks import require_transport, transport_url


def _parse_arguments(pairs: Sequence[str]) -> dict[str, str]:
    """``key=value`` words to the contract's string arguments; malformed ones are usage errors."""
    arguments: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            fail(f"argument {pair!r} is not key=value", EXIT_USAGE)
        if key in arguments:
            fail(f"argument {key!r} is given twice", EXIT_USAGE)
        arguments[key] = value
    return arguments


@ofa_cli.command("call")
@click.argument("method")
@click.argument("arguments", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--target", help="UUID of the asset to call (default: this asset).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Seconds to wait for the method's _RESULT.")
@click.option("--sender", help="sender_uuid in the command envelope (default: this asset's UUID).")
@click.option("--no-wait", is_flag=True, help="Send the command and exit without waiting for its result.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def call_command(method: str, arguments: tuple[str, ...], target: str | None, timeout: float,
                 sender: str | None, no_wait: bool, as_json: bool) -> None:
    """Call METHOD on an asset, as another asset would, and print its result.

    Writes <METHOD>_CMD on the target through the transport and follows the
    target's log for the matching <METHOD>_RESULT. Values are sent as strings.
    An asset that writes no results (a reference app, told by what it
    advertises and has written) is not waited for: the command is sent and
    reported as SENT_NO_RESULT at once.
    Exit codes: 0 OK, 1 ERROR, 2 REJECTED, 3 no result in time, 4 bad usage,
    5 the transport failed, 6 sent to an asset that does not answer with results.
    """
    runtime = current_runtime()
    args = _parse_arguments(arguments)
    target_uuid = target if target is not None else runtime.asset_uuid
    sender_uuid = sender if sender is not None else runtime.asset_uuid
    try:
        validate_identifier("method name", method)
        validate_identifier("target asset UUID", target_uuid)
        validate_identifier("sender UUID", sender_uuid)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    if target_uuid == runtime.asset_uuid and method not in runtime.methods:
        known = ", ".join(sorted(runtime.methods)) or "none"
        fail(f"asset {target_uuid!r} has no method {method!r} (methods: {known})", EXIT_USAGE)

    session = Session(runtime)
    unanswered = False
    try:
        require_transport(session, min(timeout, CHECK_TIMEOUT), EXIT_TRANSPORT)

        def answers() -> bool:
            return target_uuid == runtime.asset_uuid or runtime.asset(target_uuid).answers_results() is not False

        def send() -> tuple[str, CommandResult | None]:
            cid, result = runtime.send_command(target_uuid, method, args,
                                               wait=None if no_wait else timeout, sender_uuid=sender_uuid)
            if no_wait:
                pending = runtime.transport.flush(timeout)
                if pending:
                    raise RuntimeError(f"the command was not delivered within {timeout:g} s")
            return cid, result

        try:
            if not no_wait and not session.run(answers, timeout + GRACE, "reading the target's state"):
                no_wait = unanswered = True
            correlation_id, result = session.run(send, timeout + SEND_GRACE, "sending the command")
        except Deadline as exc:
            fail(f"transport {transport_url(runtime)} does not answer: {exc}", EXIT_TRANSPORT)
        except Exception as exc:
            fail(f"transport {transport_url(runtime)} failed: {one_line(exc)}", EXIT_TRANSPORT)
        url = transport_url(runtime)
    finally:
        session.close()

    report: dict[str, Any] = {"method": method, "target": target_uuid, "sender_uuid": sender_uuid,
                              "arguments": args, "correlation_id": correlation_id, "transport": url,
                              "signed": runtime.settings.command_secret is not None}
    if unanswered:
        report.update(status=NO_RESULT, result=None, error=None, duration_ms=None)
        code = EXIT_NO_RESULT
    elif no_wait:
        report.update(status="SENT", result=None, error=None, duration_ms=None)
        code = EXIT_OK
    elif result is None:
        report.update(status="TIMEOUT", result=None, duration_ms=None,
                      error=f"no {method}_RESULT from {target_uuid} within {timeout:g} s")
        code = EXIT_TIMEOUT
    else:
        report.update(status=result.status, result=result.result, error=result.error,
                      duration_ms=round(result.duration_ms, 3))
        code = STATUS_EXIT.get(result.status, EXIT_ERROR)
    if as_json:
        click.echo(dump(report))
    else:
        _print_call(report)
    if code == EXIT_TIMEOUT:
        click.echo(f"Error: {report['error']}: is a process executing commands for this asset "
                   f"running on {url}? The command stays in the log and may still run when one "
                   f"starts (correlation id {correlation_id})", err=True)
    raise click.exceptions.Exit(code)


def _print_call(report: dict[str, Any]) -> None:
    status = report["status"]
    where = f"{report['method']} on {report['target']}"
    if status == "SENT":
        click.echo(f"SENT {where} (not waiting for the result)")
    elif status == NO_RESULT:
        click.echo(f"{NO_RESULT} {where}: {NO_RESULT_TEXT}")
    elif status == "TIMEOUT":
        click.echo(f"TIMEOUT {where}: no result")
    else:
        click.echo(f"{status} {where} ({report['duration_ms']:g} ms)")
        if status == OK:
            click.echo(f"result: {json.dumps(report['result'])}")
        else:
            click.echo(f"error: {report['error']}")
    click.echo(f"correlation id: {report['correlation_id']}")


@ofa_cli.command("result")
@click.argument("correlation_id")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Seconds to wait for the transport.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def result_command(correlation_id: str, timeout: float, as_json: bool) -> None:
    """The result of a call of this asset, by its correlation id, read from the log.

    For a call that answered 504 or a `call` that timed out: calls within
    OPENFACTORY_COMMAND_MAX_AGE are found. Exit codes: 0 OK, 1 ERROR,
    2 REJECTED, 3 in the log but not answered yet, 4 no such call (or not a
    UUID), 5 the transport failed.
    """
    runtime = current_runtime()
    try:
        cid = str(uuid.UUID(correlation_id.strip()))
    except ValueError:
        fail(f"the correlation id must be a UUID, got {correlation_id!r}", EXIT_USAGE)
    session = Session(runtime)
    try:
        require_transport(session, min(timeout, CHECK_TIMEOUT), EXIT_TRANSPORT)
        try:
            entry = session.run(lambda: runtime.find_call(cid), timeout, "reading the log")
        except Deadline as exc:
            fail(f"transport {transport_url(runtime)} does not answer: {exc}", EXIT_TRANSPORT)
        except Exception as exc:
            fail(f"transport {transport_url(runtime)} failed: {one_line(exc)}", EXIT_TRANSPORT)
    finally:
        session.close()
    if entry is None:
        fail(f"no call {cid} in the log of {runtime.asset_uuid!r} within the last {runtime.calls.window:g} s",
              EXIT_USAGE)
    report: dict[str, Any] = {"method": entry.method, "target": runtime.asset_uuid, "correlation_id": cid}
    if entry.result is None:
        report.update(status="PENDING", result=None, error=None, duration_ms=None)
        code = EXIT_TIMEOUT
    else:
        result = entry.result
        report.update(status=result.status, result=result.result, error=result.error,
                      duration_ms=round(result.duration_ms, 3), sender_uuid=result.sender_uuid)
        code = STATUS_EXIT.get(result.status, EXIT_ERROR)
    if as_json:
        click.echo(dump(report))
    elif report["status"] == "PENDING":
        click.echo(f"PENDING {entry.method} on {runtime.asset_uuid}: in the log, no result yet")
        click.echo(f"correlation id: {cid}")
    else:
        _print_call(report)
    raise click.exceptions.Exit(code)
