"""An asset's log read straight from its sqlite database file (the sqlite transport's)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

from flask_openfactory.wire.commands import CommandResult, is_result
from flask_openfactory.wire.protocol import Record

__all__ = ["log_records", "results_of"]


def log_records(db: Path, asset_uuid: str) -> list[Record]:
    """The asset's log, in order."""
    with closing(sqlite3.connect(db, timeout=10)) as conn:
        rows = conn.execute("SELECT key, value FROM log WHERE key = ? ORDER BY offset", (asset_uuid,)).fetchall()
    return [Record.from_wire(key, value) for key, value in rows]


def results_of(records: Iterable[Record], method: str) -> dict[str, list[CommandResult]]:
    """Results of ``method`` per correlation id, in log order."""
    found: dict[str, list[CommandResult]] = {}
    for record in records:
        if is_result(record) and record.id == f"{method}_RESULT":
            result = CommandResult.from_record(record)
            found.setdefault(str(result.correlation_id), []).append(result)
    return found
