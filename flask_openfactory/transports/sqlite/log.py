"""The log table and the state beside it: what is appended, and how readers walk it.

The log is append-only and its rowid is the offset: writers are serialised by
SQLite, so offsets become visible in increasing order with no gaps to wait
for. Each append writes the record's row into ``state`` in the same
transaction, so a snapshot never disagrees with the log. ``SqliteLog`` is the
interface followers and command readers receive: the log's end, a key's rows
after a position, and this process's wake-up for new writes.
"""

from __future__ import annotations

import math
import sqlite3
import time
from typing import Any

from ...wire.protocol import Record
from .database import SqliteDatabase
from .forking import Wakeup, wakeup_for

__all__ = ["BATCH", "Row", "SqliteLog"]

BATCH = 1000  # rows read per query, so a long backlog is returned in bounded pieces

Row = tuple[Any, ...]  # (offset, key, value) as stored


class SqliteLog:
    """The asset log of one database, shared by the transport, its followers and its command readers."""

    def __init__(self, database: SqliteDatabase) -> None:
        self._database = database

    @property
    def path(self) -> str:
        return self._database.path

    def wakeup(self) -> Wakeup:
        """This process's wake-up for the database: notified after each local append."""
        return wakeup_for(self.path)

    # appending

    def append(self, record: Record) -> None:
        """Write the record to the log and as its attribute's state, in one acknowledged transaction."""
        wire = record.to_wire()

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO log (key, value, written_at) VALUES (?, ?, ?)",
                (record.asset_uuid, wire, time.time()),
            )
            conn.execute(
                "INSERT INTO state (key, id, record) VALUES (?, ?, ?) "
                "ON CONFLICT (key, id) DO UPDATE SET record = excluded.record",
                (record.asset_uuid, record.id, wire.decode("utf-8")),
            )

        self._database.write(work, f"publish {record.id!r} of {record.asset_uuid!r}")

    # reading

    def end(self) -> int:
        """The offset of the last log entry (0 for an empty log: offsets start at 1)."""
        end: int = self._database.read("SELECT coalesce(max(offset), 0) FROM log")[0][0]
        return end

    def last(self) -> tuple[int, float | None]:
        """The last entry's offset and when it was written: one read of the rowid's end."""
        rows = self._database.read("SELECT offset, written_at FROM log ORDER BY offset DESC LIMIT 1")
        return (int(rows[0][0]), float(rows[0][1])) if rows else (0, None)

    def epoch(self) -> int:
        """Moves each time this process resumes on a new file (see ``FileGuard``)."""
        return self._database.current_guard().epoch

    def written_at(self, offset: int) -> float | None:
        """When the row at ``offset`` was written; None for no such row."""
        if offset <= 0:
            return None
        rows = self._database.read("SELECT written_at FROM log WHERE offset = ?", (offset,))
        return float(rows[0][0]) if rows else None

    def rewound(self, position: int, mark: float | None) -> int | None:
        """Where a reader at ``position`` (its row written at ``mark``) must go on from when the
        log no longer holds that row (put back from an older copy); None when it does."""
        if position <= 0 or (mark is not None and self.written_at(position) == mark):
            return None
        if mark is None:  # nothing to compare: only a log that ends before the position is another
            end = self.end()
            return end if end < position else None
        return self.offset_at(math.nextafter(mark, math.inf)) - 1

    def scan(self, key: str, after: int) -> tuple[list[Row], int, float | None]:
        """The key's rows after ``after``, the position reached (past other keys' rows too)
        and when the row there was written (what a ``Cursor`` keeps).

        The position never lies beyond the log's end: a log put back from an
        older copy ends before ``after``, and its next rows take offsets again
        from where it ends."""
        end, written_at = self.last()
        if end <= after:
            return [], end, written_at
        rows = self._database.read(
            "SELECT offset, key, value FROM log WHERE key = ? AND offset > ? AND offset <= ? "
            "ORDER BY offset LIMIT ?",
            (key, after, end, BATCH),
        )
        if len(rows) < BATCH:
            return rows, end, written_at
        position = rows[-1][0]  # a long backlog, read in pieces
        return rows, position, self.written_at(position)

    def offset_at(self, moment: float) -> int:
        """The first offset written at or after ``moment``: a binary search on the rowid.

        ``written_at`` grows with the offset (writers are serialised), so this
        costs about 20 point reads on a log of a million rows and needs no index.
        """
        read = self._database.read
        low: int = read("SELECT coalesce(min(offset), 1) FROM log")[0][0]
        high = self.end() + 1
        while low < high:
            middle = (low + high) // 2
            row = read("SELECT offset, written_at FROM log WHERE offset >= ? ORDER BY offset LIMIT 1", (middle,))
            if not row or row[0][1] >= moment:
                high = middle
            else:
                low = row[0][0] + 1
        return low

    def calls_from(self, key: str, start: int) -> list[Row]:
        """The key's rows from ``start`` on that may hold a command or a result (callers decode them)."""
        return self._database.read(
            "SELECT offset, key, value FROM log WHERE key = ? AND offset >= ? "
            "AND (instr(value, '_CMD\"') > 0 OR instr(value, '_RESULT\"') > 0) ORDER BY offset",
            (key, start),
        )

    def state(self, key: str) -> list[Row]:
        """The key's stored state: (attribute id, record text) per attribute."""
        return self._database.read("SELECT id, record FROM state WHERE key = ?", (key,))
