"""The tables of the sqlite log, created by the first connection of each process.

``log`` is append-only and its rowid is the offset; ``state`` holds the last
record per (asset, attribute), written in the same transaction as the log row
so a snapshot never disagrees with the log; ``committed`` holds each command
reader group's position. The guard's ``meta`` table holds the log's id.
"""

from __future__ import annotations

import sqlite3

from .guard import ensure_log_id

__all__ = ["create_schema"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS log (
        offset INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT,
        value BLOB,
        written_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS log_key_offset ON log (key, offset)",
    """CREATE TABLE IF NOT EXISTS state (
        key TEXT NOT NULL,
        id TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (key, id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS committed (
        grp TEXT NOT NULL,
        key TEXT NOT NULL,
        offset INTEGER NOT NULL,
        PRIMARY KEY (grp, key)
    ) WITHOUT ROWID""",
)


def create_schema(conn: sqlite3.Connection) -> str:
    """The tables, and the log's id (created with the log)."""
    for statement in _SCHEMA:
        conn.execute(statement)
    return ensure_log_id(conn)
