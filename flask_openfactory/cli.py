"""``flask ofa``: inspect the asset and call its methods from a shell.

Every command runs in a short-lived process of its own (the ``flask`` CLI), so
none starts the runtime's threads: they read the transport's snapshot and send
commands exactly as another asset would, through the same log the serving
process executes from. Every transport call is bounded in time, so a Kafka
cluster that is down, or a sqlite file that cannot be opened, gives a one-line
error naming the transport instead of a hang or a traceback.

Exit codes of ``call``: 0 OK, 1 ERROR, 2 REJECTED, 3 no result in time,
4 bad usage, 5 the transport failed. ``status``, ``attributes``: 1 when the
transport does not answer.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

import click
from flask import current_app
from flask.cli import AppGroup

from .answering import NO_RESULT_TEXT
from .commands import ERROR, NO_RESULT, OK, REJECTED, CommandResult
from .methods import MethodSpec
from .protocol import Record, validate_identifier
from .routing import routing_warnings
from .runtime import AssetRuntime

T = TypeVar("T")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_REJECTED = 2
EXIT_TIMEOUT = 3
EXIT_USAGE = 4
EXIT_TRANSPORT = 5
EXIT_NO_RESULT = 6

_STATUS_EXIT = {OK: EXIT_OK, ERROR: EXIT_ERROR, REJECTED: EXIT_REJECTED}

# Grace on top of a command's own timeout before a blocked transport call is abandoned;
# sending also opens a follower of the target's log (a Kafka consumer) before it waits.
_GRACE = 1.0
_SEND_GRACE = 5.0
_CHECK_TIMEOUT = 5.0
_MAX_CELL = 60


def _quiet_library_logs(verbose: bool) -> None:
    """Keep the library's log lines (librdkafka retries: dozens) from burying the one-line error."""
    if verbose:
        return
    logger = logging.getLogger("flask_openfactory")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    click.get_current_context().call_on_close(lambda: logger.setLevel(previous))


ofa_cli = AppGroup(
    "ofa",
    help="Inspect this app's OpenFactory asset and call its methods through the transport.",
    params=[click.Option(["-v", "--verbose"], is_flag=True,
                         help="Show the library's log lines (transport retries and the like).")],
    callback=_quiet_library_logs,
)


class _Deadline(TimeoutError):
    """A transport call that did not return in time; its thread is abandoned."""


class _Worker:
    """One daemon thread that runs a command's transport calls in turn.

    One thread, so that per-thread clients (sqlite connections) are opened once
    and closed by ``close`` on the thread that opened them; a daemon, so that a
    call that never returns cannot keep the process from exiting.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name="ofa-cli", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def submit(self, job: Callable[[], None] | None) -> None:
        """Queue a call; None asks the worker to end after the calls before it."""
        self._jobs.put(job)

    def stop(self, timeout: float) -> None:
        self._jobs.put(None)
        self.thread.join(timeout)


class _Session:
    """The CLI's use of the runtime's transport, released when the command ends.

    A transport call that hangs past its deadline is abandoned with its worker;
    after that, releasing the transport could block on the same lock, so it is skipped.
    """

    def __init__(self, runtime: AssetRuntime) -> None:
        self.runtime = runtime
        self.hung = False
        self._worker: _Worker | None = None

    def run(self, fn: Callable[[], T], timeout: float, what: str) -> T:
        """Run ``fn`` on the worker; raise ``_Deadline`` if it outlives ``timeout``."""
        outcome: list[T] = []
        failure: list[BaseException] = []
        done = threading.Event()

        def job() -> None:
            try:
                outcome.append(fn())
            except BaseException as exc:  # handed to the caller's thread
                failure.append(exc)
            finally:
                done.set()

        if self._worker is None:
            self._worker = _Worker()
        self._worker.submit(job)
        if not done.wait(timeout):
            self._worker.submit(None)  # the worker ends if the stuck call ever returns
            self.hung, self._worker = True, None
            raise _Deadline(f"{what} did not return within {timeout:g} s")
        if failure:
            raise failure[0]
        return outcome[0]

    def close(self) -> None:
        """Flush and close a transport this command created; never one a started runtime uses."""
        try:
            if not self.hung and not self.runtime.started and self._worker is not None:
                self.run(lambda: self.runtime.stop(timeout=2.0, publish_unavailable=False), 3.0, "close")
        except Exception:
            pass
        finally:
            if self._worker is not None:
                self._worker.stop(1.0)
                self._worker = None


# -- helpers ------------------------------------------------------------------------


def _runtime() -> AssetRuntime:
    state = current_app.extensions.get("openfactory")
    if state is None:
        _fail("the current Flask app has no OpenFactory extension: call 'ofa.init_app(app)'", EXIT_USAGE)
    return state.runtime  # type: ignore[no-any-return]  # app.extensions holds Any


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    raise click.exceptions.Exit(code)


def _one_line(exc: BaseException) -> str:
    """An exception as one masked line: a transport may quote its raw URL in errors."""
    text = _mask(" ".join(str(exc).split()))
    if isinstance(exc, _Deadline):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ``user:password@`` anywhere (a transport may echo its raw netloc in an error), and
# secret-looking query parameters.
_USERINFO = re.compile(r"(?P<user>[^\s/@:'\"\[\]]+):[^\s/@'\"]+@")
_SECRET_PARAM = re.compile(r"(?i)(?P<key>[?&;](?:[^=&;\s]*(?:password|passwd|secret|token|key)[^=&;\s]*)=)[^&;\s\"']*")


def _mask(text: str) -> str:
    """Mask credentials in URLs and in messages that quote them."""
    text = _USERINFO.sub(lambda m: f"{m['user']}:***@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['key']}***", text)


def _transport_url(runtime: AssetRuntime) -> str:
    """The transport's own masked URL if it exists, else the configured one masked here."""
    if runtime.transport_created:  # never opens one just to name it
        try:
            return _mask(str(runtime.transport.display_url))
        except Exception:
            pass
    return _mask(runtime.settings.transport_url)


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str)


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "") -> list[str]:
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return (indent + "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=False))).rstrip()

    return [line(headers)] + [line(r) for r in cells]


_ATTRIBUTE_HEADERS = ("ID", "VALUE", "TAG", "TYPE", "TIMESTAMP")


def _attribute_rows(records: Sequence[Record]) -> list[list[Any]]:
    return [[r.id, r.value, r.tag, r.type, r.timestamp] for r in records]


def _unpublished(runtime: AssetRuntime, records: Sequence[Record]) -> list[str]:
    """Declared attributes with no record yet (the app has never started on this log)."""
    seen = {r.id for r in records}
    return sorted(a for a in runtime.declared_attributes if a not in seen)


def _method_info(spec: MethodSpec) -> dict[str, Any]:
    """The advertisement's arguments (JSON-safe defaults) plus the Python signature."""
    advertised = json.loads(spec.advertisement())
    return {
        "name": spec.name,
        "signature": spec.signature_text(),
        "description": spec.description,
        "arguments": advertised["arguments"],
    }


def _method_lines(spec: MethodSpec, indent: str = "") -> list[str]:
    lines = [indent + spec.signature_text()]
    if spec.description:
        lines += [indent + "    " + text for text in spec.description.splitlines()]
    for p in spec.parameters:
        extra = "required" if p.required else f"default {p.default!r}"
        described = f": {p.description}" if p.description else ""
        lines.append(f"{indent}    - {p.name} ({p.type_name}, {extra}){described}")
    return lines


def _read_records(session: _Session, timeout: float) -> list[Record]:
    return session.run(session.runtime.records, timeout + _GRACE, "reading the asset's state")


# -- status -------------------------------------------------------------------------


def _ksqldb_view(url: str | None, uuid: str, timeout: float, session: _Session) -> dict[str, Any]:
    """The platform's view of this asset; the client is imported here so the CLI works without it."""
    if not url:
        return {"configured": False}
    shown = _mask(url)
    try:
        from .ksqldb import KsqlDBClient, KsqlDBUnavailable
    except ImportError as exc:
        return {"configured": True, "url": shown, "ok": False,
                "error": f"not reachable: the ksqlDB client cannot be imported ({_one_line(exc)})"}

    def query() -> tuple[str | None, list[dict[str, Any]]]:
        try:
            client = KsqlDBClient(url, timeout=timeout, retries=0)
        except TypeError:
            client = KsqlDBClient(url, timeout=timeout)
        try:
            return client.asset_type(uuid), client.asset_state(uuid)
        finally:
            client.close()

    try:
        asset_type, rows = session.run(query, 2 * timeout + _GRACE, "ksqlDB")
    except (KsqlDBUnavailable, _Deadline) as exc:
        return {"configured": True, "url": shown, "ok": False, "error": f"not reachable: {_one_line(exc)}"}
    except Exception as exc:
        return {"configured": True, "url": shown, "ok": False, "error": f"query failed: {_one_line(exc)}"}
    attributes = [
        {key.lower(): _column(row, key) for key in _ATTRIBUTE_HEADERS} for row in rows
    ]
    attributes.sort(key=lambda a: str(a["id"]))
    return {"configured": True, "url": shown, "ok": True, "asset_type": asset_type, "attributes": attributes}


def _column(row: dict[str, Any], name: str) -> Any:
    for key in (name, name.lower()):
        if key in row:
            return row[key]
    return None


def _check_transport(session: _Session, timeout: float) -> dict[str, Any]:
    def check() -> dict[str, Any]:
        health = session.runtime.transport.check(timeout)
        return {"ok": bool(health.ok), "detail": _mask(" ".join(str(health.detail).split()))}

    try:
        outcome = session.run(check, timeout + _GRACE, "the transport check")
    except _Deadline as exc:
        outcome = {"ok": False, "detail": f"no answer: {exc}"}
    except Exception as exc:
        outcome = {"ok": False, "detail": _one_line(exc)}
    return {"url": _transport_url(session.runtime), **outcome}


def _require_transport(session: _Session, timeout: float, code: int) -> None:
    """Ask the transport first, so that a backend that is down is named with its reason."""
    transport = _check_transport(session, timeout)
    if not transport["ok"]:
        _fail(f"transport {transport['url']} does not answer: {transport['detail']}", code)


@ofa_cli.command("status")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Seconds to wait for the transport (and ksqlDB) to answer.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status_command(timeout: float, as_json: bool) -> None:
    """Asset identity, transport health, attributes, methods and ksqlDB's view.

    Exits 1 when the transport does not answer.
    """
    runtime = _runtime()
    session = _Session(runtime)
    try:
        transport = _check_transport(session, timeout)
        records: list[Record] | None = None
        records_error: str | None = None
        if transport["ok"]:
            try:
                records = _read_records(session, timeout)
            except Exception as exc:
                records_error = _one_line(exc)
        else:
            records_error = "not read: the transport does not answer"
        ksqldb = _ksqldb_view(current_app.config["OPENFACTORY_KSQLDB_URL"], runtime.asset_uuid,
                              timeout, session)
    finally:
        session.close()
    report: dict[str, Any] = {
        "asset_uuid": runtime.asset_uuid,
        "routing_warnings": routing_warnings(runtime.asset_uuid),
        "config_name": current_app.config["OPENFACTORY_CONFIG_NAME"] or "unknown",
        "transport": transport,
        "attributes": None if records is None else [r.as_dict() for r in records],
        "unpublished_attributes": [] if records is None else _unpublished(runtime, records),
        "attributes_error": records_error,
        "methods": [_method_info(spec) for spec in runtime.methods.values()],
        "tasks": _task_info(runtime, records),
        "subscriptions": _subscription_info(runtime),
        "ksqldb": ksqldb,
        "warnings": list(current_app.extensions["openfactory"].warnings),
        "ok": bool(transport["ok"]) and records_error is None,
    }
    if as_json:
        click.echo(_dump(report))
    else:
        _print_status(report, runtime, records)
    if not transport["ok"]:
        click.echo(f"Error: transport {transport['url']} does not answer: {transport['detail']}", err=True)
        raise click.exceptions.Exit(EXIT_ERROR)
    if records_error is not None:
        click.echo(f"Error: reading the asset's state from {transport['url']} failed: {records_error}", err=True)
        raise click.exceptions.Exit(EXIT_ERROR)


def _task_info(runtime: AssetRuntime, records: list[Record] | None) -> list[dict[str, Any]]:
    """Declared tasks with their Condition as published by the process that runs them."""
    current = {r.id: r for r in records or ()}
    info = []
    for spec in runtime.tasks.values():
        record = current.get(spec.condition.id)
        info.append({"name": spec.name, "async": spec.is_async, "condition": spec.condition.id,
                     "level": record.tag if record else None, "state": record.value if record else None})
    return info


def _subscription_info(runtime: AssetRuntime) -> list[dict[str, Any]]:
    info = []
    for spec in runtime.subscriptions.values():
        try:
            asset = spec.resolve_asset()
        except Exception as exc:  # a UUID from config that is missing: show, do not fail
            asset = f"unresolved ({_one_line(exc)})"
        info.append({"name": spec.name, "asset": asset, "attribute": spec.attribute, "type": spec.type,
                     "every_worker": spec.every_worker})
    return info


def _print_status(report: dict[str, Any], runtime: AssetRuntime, records: list[Record] | None) -> None:
    transport = report["transport"]
    answer = "ok" if transport["ok"] else "NOT ANSWERING"
    click.echo(f"asset:     {report['asset_uuid']}")
    for warning in report["routing_warnings"]:
        click.echo(f"WARNING:   {warning}")
    click.echo(f"config:    {report['config_name']}")
    click.echo(f"transport: {transport['url']} ({answer}: {transport['detail']})")
    for warning in report["warnings"]:
        click.echo(f"warning:   {warning}")
    click.echo("")
    if records is None:
        click.echo(f"attributes: {report['attributes_error']}")
    else:
        click.echo(f"attributes ({len(records)}):")
        for line in _table(_ATTRIBUTE_HEADERS, _attribute_rows(records), indent="  "):
            click.echo(line)
        if report["unpublished_attributes"]:
            click.echo("  declared, no value yet: " + ", ".join(report["unpublished_attributes"]))
    click.echo("")
    specs = list(runtime.methods.values())
    click.echo(f"methods ({len(specs)}):")
    for spec in specs:
        click.echo("  " + spec.signature_text())
    if report["tasks"]:
        click.echo("")
        click.echo(f"background tasks ({len(report['tasks'])}), in the process that executes commands:")
        for task in report["tasks"]:
            state = f"{task['level']}: {task['state']}" if task["level"] else "not reported yet"
            click.echo(f"  {task['name']}{' (async)' if task['async'] else ''}: {state}")
    if report["subscriptions"]:
        click.echo("")
        click.echo(f"subscriptions ({len(report['subscriptions'])}):")
        for sub in report["subscriptions"]:
            what = sub["attribute"] or (f"{sub['type']} attributes" if sub["type"] else "all attributes")
            where = "every worker" if sub["every_worker"] else "executing process"
            click.echo(f"  {sub['name']}: {what} of {sub['asset']} ({where})")
    click.echo("")
    ksqldb = report["ksqldb"]
    if not ksqldb["configured"]:
        click.echo("ksqlDB: not configured (set OPENFACTORY_KSQLDB_URL or KSQLDB_URL)")
    elif not ksqldb["ok"]:
        click.echo(f"ksqlDB at {ksqldb['url']} {ksqldb['error']}")
    else:
        click.echo(f"ksqlDB at {ksqldb['url']}: asset type {ksqldb['asset_type'] or 'unknown (not registered)'}, "
                   f"{len(ksqldb['attributes'])} attribute(s)")
        rows = [[a[k.lower()] for k in _ATTRIBUTE_HEADERS] for a in ksqldb["attributes"]]
        for line in _table(_ATTRIBUTE_HEADERS, rows, indent="  "):
            click.echo(line)


# -- call ---------------------------------------------------------------------------


def _parse_arguments(pairs: Sequence[str]) -> dict[str, str]:
    """``key=value`` words to the contract's string arguments; malformed ones are usage errors."""
    arguments: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            _fail(f"argument {pair!r} is not key=value", EXIT_USAGE)
        if key in arguments:
            _fail(f"argument {key!r} is given twice", EXIT_USAGE)
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
    runtime = _runtime()
    args = _parse_arguments(arguments)
    target_uuid = target if target is not None else runtime.asset_uuid
    sender_uuid = sender if sender is not None else runtime.asset_uuid
    try:
        validate_identifier("method name", method)
        validate_identifier("target asset UUID", target_uuid)
        validate_identifier("sender UUID", sender_uuid)
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)
    if target_uuid == runtime.asset_uuid and method not in runtime.methods:
        known = ", ".join(sorted(runtime.methods)) or "none"
        _fail(f"asset {target_uuid!r} has no method {method!r} (methods: {known})", EXIT_USAGE)

    session = _Session(runtime)
    unanswered = False
    try:
        _require_transport(session, min(timeout, _CHECK_TIMEOUT), EXIT_TRANSPORT)

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
            if not no_wait and not session.run(answers, timeout + _GRACE, "reading the target's state"):
                no_wait = unanswered = True
            correlation_id, result = session.run(send, timeout + _SEND_GRACE, "sending the command")
        except _Deadline as exc:
            _fail(f"transport {_transport_url(runtime)} does not answer: {exc}", EXIT_TRANSPORT)
        except Exception as exc:
            _fail(f"transport {_transport_url(runtime)} failed: {_one_line(exc)}", EXIT_TRANSPORT)
        url = _transport_url(runtime)
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
        code = _STATUS_EXIT.get(result.status, EXIT_ERROR)
    if as_json:
        click.echo(_dump(report))
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
    runtime = _runtime()
    try:
        cid = str(uuid.UUID(correlation_id.strip()))
    except ValueError:
        _fail(f"the correlation id must be a UUID, got {correlation_id!r}", EXIT_USAGE)
    session = _Session(runtime)
    try:
        _require_transport(session, min(timeout, _CHECK_TIMEOUT), EXIT_TRANSPORT)
        try:
            entry = session.run(lambda: runtime.find_call(cid), timeout, "reading the log")
        except _Deadline as exc:
            _fail(f"transport {_transport_url(runtime)} does not answer: {exc}", EXIT_TRANSPORT)
        except Exception as exc:
            _fail(f"transport {_transport_url(runtime)} failed: {_one_line(exc)}", EXIT_TRANSPORT)
    finally:
        session.close()
    if entry is None:
        _fail(f"no call {cid} in the log of {runtime.asset_uuid!r} within the last {runtime.calls.window:g} s",
              EXIT_USAGE)
    report: dict[str, Any] = {"method": entry.method, "target": runtime.asset_uuid, "correlation_id": cid}
    if entry.result is None:
        report.update(status="PENDING", result=None, error=None, duration_ms=None)
        code = EXIT_TIMEOUT
    else:
        result = entry.result
        report.update(status=result.status, result=result.result, error=result.error,
                      duration_ms=round(result.duration_ms, 3), sender_uuid=result.sender_uuid)
        code = _STATUS_EXIT.get(result.status, EXIT_ERROR)
    if as_json:
        click.echo(_dump(report))
    elif report["status"] == "PENDING":
        click.echo(f"PENDING {entry.method} on {runtime.asset_uuid}: in the log, no result yet")
        click.echo(f"correlation id: {cid}")
    else:
        _print_call(report)
    raise click.exceptions.Exit(code)


# -- attributes, methods ------------------------------------------------------------


@ofa_cli.command("attributes")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Seconds to wait for the transport.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def attributes_command(timeout: float, as_json: bool) -> None:
    """The asset's current attributes, as the transport holds them (exit 1 if it fails)."""
    runtime = _runtime()
    session = _Session(runtime)
    try:
        _require_transport(session, timeout, EXIT_ERROR)
        try:
            records = _read_records(session, timeout)
        except Exception as exc:
            _fail(f"reading the asset's state from transport {_transport_url(runtime)} failed: "
                  f"{_one_line(exc)}", EXIT_ERROR)
    finally:
        session.close()
    if as_json:
        click.echo(_dump([r.as_dict() for r in records]))
        return
    for line in _table(_ATTRIBUTE_HEADERS, _attribute_rows(records)):
        click.echo(line)
    missing = _unpublished(runtime, records)
    if missing:
        click.echo("declared, no value yet: " + ", ".join(missing))


@ofa_cli.command("methods")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def methods_command(as_json: bool) -> None:
    """The methods this app declares: signature, description and arguments."""
    specs = list(_runtime().methods.values())
    if as_json:
        click.echo(_dump([_method_info(spec) for spec in specs]))
        return
    if not specs:
        click.echo("no methods declared")
    for spec in specs:
        for line in _method_lines(spec):
            click.echo(line)
