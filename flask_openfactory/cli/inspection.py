"""``flask ofa status``, ``attributes`` and ``methods``: what the asset is, holds and offers.

Each reads the transport's snapshot through a bounded session; none starts the runtime's threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
from flask import current_app

from ..runtime import AssetRuntime
from ..state import get_state
from ..wire.protocol import Record
from ..wire.routing import routing_warnings
from .deadline import Session
from .group import EXIT_ERROR, current_runtime, fail, ofa_cli
from .ksqldb_view import ksqldb_view
from .masking import one_line
from .tables import ATTRIBUTE_HEADERS, attribute_rows, dump, method_info, method_lines, table
from .transport_checks import check_transport, read_records, require_transport, transport_url


def _unpublished(runtime: AssetRuntime, records: Sequence[Record]) -> list[str]:
    """Declared attributes with no record yet (the app has never started on this log)."""
    seen = {r.id for r in records}
    return sorted(a for a in runtime.declared_attributes if a not in seen)


@ofa_cli.command("status")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Seconds to wait for the transport (and ksqlDB) to answer.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status_command(timeout: float, as_json: bool) -> None:
    """Asset identity, transport health, attributes, methods and ksqlDB's view.

    Exits 1 when the transport does not answer.
    """
    runtime = current_runtime()
    session = Session(runtime)
    try:
        transport = check_transport(session, timeout)
        records: list[Record] | None = None
        records_error: str | None = None
        if transport["ok"]:
            try:
                records = read_records(session, timeout)
            except Exception as exc:
                records_error = one_line(exc)
        else:
            records_error = "not read: the transport does not answer"
        ksqldb = ksqldb_view(current_app.config["OPENFACTORY_KSQLDB_URL"], runtime.asset_uuid,
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
        "methods": [method_info(spec) for spec in runtime.methods.values()],
        "tasks": _task_info(runtime, records),
        "subscriptions": _subscription_info(runtime),
        "ksqldb": ksqldb,
        "warnings": list(get_state(current_app).warnings),
        "ok": bool(transport["ok"]) and records_error is None,
    }
    if as_json:
        click.echo(dump(report))
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
            asset = f"unresolved ({one_line(exc)})"
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
        for line in table(ATTRIBUTE_HEADERS, attribute_rows(records), indent="  "):
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
        rows = [[a[k.lower()] for k in ATTRIBUTE_HEADERS] for a in ksqldb["attributes"]]
        for line in table(ATTRIBUTE_HEADERS, rows, indent="  "):
            click.echo(line)


@ofa_cli.command("attributes")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Seconds to wait for the transport.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def attributes_command(timeout: float, as_json: bool) -> None:
    """The asset's current attributes, as the transport holds them (exit 1 if it fails)."""
    runtime = current_runtime()
    session = Session(runtime)
    try:
        require_transport(session, timeout, EXIT_ERROR)
        try:
            records = read_records(session, timeout)
        except Exception as exc:
            fail(f"reading the asset's state from transport {transport_url(runtime)} failed: "
                  f"{one_line(exc)}", EXIT_ERROR)
    finally:
        session.close()
    if as_json:
        click.echo(dump([r.as_dict() for r in records]))
        return
    for line in table(ATTRIBUTE_HEADERS, attribute_rows(records)):
        click.echo(line)
    missing = _unpublished(runtime, records)
    if missing:
        click.echo("declared, no value yet: " + ", ".join(missing))


@ofa_cli.command("methods")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def methods_command(as_json: bool) -> None:
    """The methods this app declares: signature, description and arguments."""
    specs = list(current_runtime().methods.values())
    if as_json:
        click.echo(dump([method_info(spec) for spec in specs]))
        return
    if not specs:
        click.echo("no methods declared")
    for spec in specs:
        for line in method_lines(spec):
            click.echo(line)
