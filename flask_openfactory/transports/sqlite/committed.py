"""Where each command reader group resumes on an asset's log: the ``committed`` table.

The first owner of a (group, asset) that never committed starts at the end of
the log, and that start is stored at once, so a call written after it is never
skipped by a later owner; commits only ever move a position forward.
"""

from __future__ import annotations

import sqlite3

from .database import SqliteDatabase

__all__ = ["CommittedPositions"]


class CommittedPositions:
    """The committed positions of one database's command reader groups."""

    def __init__(self, database: SqliteDatabase) -> None:
        self._database = database

    def claim_start(self, group: str, key: str) -> int:
        """The committed position, set to the end of the log on the group's first ownership."""

        def work(conn: sqlite3.Connection) -> int:
            conn.execute(
                "INSERT INTO committed (grp, key, offset) "
                "SELECT ?, ?, coalesce(max(offset), 0) FROM log WHERE true "
                "ON CONFLICT (grp, key) DO NOTHING",
                (group, key),
            )
            row = conn.execute(
                "SELECT offset FROM committed WHERE grp = ? AND key = ?", (group, key)
            ).fetchone()
            return int(row[0])

        return self._database.write(work, f"read the committed position of group {group!r}")

    def store(self, group: str, key: str, offset: int) -> None:
        """Move the group's position forward to ``offset`` (never back)."""
        self._database.write(
            lambda conn: conn.execute(
                "INSERT INTO committed (grp, key, offset) VALUES (?, ?, ?) "
                "ON CONFLICT (grp, key) DO UPDATE SET offset = max(committed.offset, excluded.offset)",
                (group, key, offset),
            ),
            f"commit offset {offset} of group {group!r}",
        )
