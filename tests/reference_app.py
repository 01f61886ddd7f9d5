"""What an openfactory-core 0.6.6 app writes about itself at start (reference-notes 2.2, 3.2).

Tests publish these records through a real transport to stand for a reference
app: its metadata names OpenFactoryIO as the library, its method advertisements
carry argument names and descriptions only, and it never writes ``_RESULT``.
"""

from __future__ import annotations

import json

from flask_openfactory.transports.base import Transport
from flask_openfactory.wire.protocol import Record


def reference_records(asset_uuid: str, methods: dict[str, list[str]]) -> list[Record]:
    def event(attr_id: str, value: str, tag: str) -> Record:
        return Record.create(asset_uuid, attr_id, value, tag=tag, type="Events")

    records = [
        event("avail", "AVAILABLE", "Availability"),
        event("application_version", "latest", "Application.Version"),
        event("application_manufacturer", "OpenFactoryIO", "Application.Manufacturer"),
        event("openfactory_manufacturer", "OpenFactoryIO", "Library.Manufacturer"),
        event("openfactory_version", "0.6.6", "Library.Version"),
        Record.create(asset_uuid, "AssetType", "OpenFactoryApp", tag="AssetType", type="OpenFactory"),
    ]
    for name, params in methods.items():
        contract = {"description": f"{name} (reference app)",
                    "arguments": [{"name": p, "description": ""} for p in params]}
        records.append(Record.create(asset_uuid, name, json.dumps(contract), tag="Method", type="Method"))
    return records


def publish_reference_app(transport: Transport, asset_uuid: str,
                          methods: dict[str, list[str]] | None = None) -> list[Record]:
    records = reference_records(asset_uuid, methods if methods is not None else {"move_axis": ["x", "y"]})
    for record in records:
        transport.publish(record)
    assert transport.flush(10) == 0
    return records
