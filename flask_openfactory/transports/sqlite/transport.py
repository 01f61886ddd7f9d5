"""``sqlite:///path.db``: the embedded default, one machine, every process.

All gunicorn workers, the CLI and restarts of the app share one database file
(database.py): the log and the state beside it (log.py), each command reader
group's position (committed.py), the file's identity and health (guard.py).
The one executor of an asset is elected with ``flock`` on a lock file next to
the database (readers.py). Nothing opened here is used across ``fork``
(forking.py).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from typing import Any

from ...wire.protocol import Record, RecordError
from ..base import (
    CommandReader,
    DeliveryCallback,
    Follower,
    Health,
    HealthTracker,
    Transport,
    TransportError,
    TransportOptions,
    decode_calls,
)
from ..locks import Membership, lock_path, membership_base
from .committed import CommittedPositions
from .database import SqliteDatabase
from .guard import FileGuard
from .location import check_location, database_path
from .log import SqliteLog
from .readers import SqliteCommandReader, SqliteFollower

__all__ = ["SqliteTransport"]


class SqliteTransport(Transport):
    scheme = "sqlite"

    def __init__(self, url: str, options: TransportOptions | None = None) -> None:
        super().__init__(url, options)
        self.path = database_path(url)
        check_location(self.path)
        self._database = SqliteDatabase(self.path, self.options.publish_timeout)
        self._log = SqliteLog(self._database)
        self._positions = CommittedPositions(self._database)
        self._counters_lock = threading.Lock()
        self._published = 0
        self._failed = 0
        self._health = HealthTracker()
        self._children: weakref.WeakSet[SqliteFollower | SqliteCommandReader] = weakref.WeakSet()

    @property
    def guard(self) -> FileGuard:
        """The guard of the database file (this process's, once the file was used after a fork)."""
        return self._database.guard

    def connection(self) -> sqlite3.Connection:
        """This thread's connection in this process: one per thread, a new one after a fork
        (a connection must never cross either), so that tests can check exactly that."""
        return self._database.connection()

    # Transport API

    def publish(self, record: Record, on_delivery: DeliveryCallback | None = None) -> None:
        """Durable when this returns (WAL, synchronous=NORMAL): delivery is reported at once.

        When this raises, nothing was written and ``on_delivery`` is not called.
        """
        try:
            self._log.append(record)
        except TransportError:
            with self._counters_lock:
                self._failed += 1
            raise
        with self._counters_lock:
            self._published += 1
        self._log.wakeup().notify()
        if on_delivery is not None:
            on_delivery(None)

    def flush(self, timeout: float) -> int:
        return 0  # publish is synchronous: nothing is ever pending

    def snapshot(self, asset_uuid: str) -> dict[str, Record]:
        found: dict[str, Record] = {}
        for attribute_id, text in self._log.state(asset_uuid):
            try:
                found[attribute_id] = Record.from_wire(asset_uuid, text)
            except RecordError:
                continue  # only decodable records are ever stored; tolerate a hand-edited row
        return found

    def follow(
        self, asset_uuid: str, *, skip_own_writes: bool = False, resume: Follower | None = None
    ) -> Follower:
        follower = SqliteFollower(self._log, asset_uuid, resume)
        self._children.add(follower)
        return follower

    def mark_start(self, asset_uuid: str, group: str) -> None:
        self._positions.claim_start(group, asset_uuid)

    def end_position(self, asset_uuid: str) -> int:
        return self._log.end()

    def calls_since(self, asset_uuid: str, since: float) -> list[Record]:
        return decode_calls(self._log.calls_from(asset_uuid, self._log.offset_at(since)))

    def command_reader(self, asset_uuid: str, group: str) -> CommandReader:
        reader = SqliteCommandReader(self._log, self._positions, asset_uuid, group,
                                     self.lock_path(asset_uuid, group))
        self._children.add(reader)
        return reader

    def lock_path(self, asset_uuid: str, group: str) -> str:
        """The election lock file of one (group, asset), next to the database it guards."""
        name = os.path.basename(self.path)
        return lock_path(os.path.dirname(self.path), "sqlite", name, group, asset_uuid, prefix=f"{name}.")

    def membership(self, asset_uuid: str) -> Membership:
        """Next to the database: every process that shares the file shares the decision."""
        return Membership(membership_base(os.path.dirname(self.path), "sqlite", os.path.basename(self.path),
                                          asset_uuid))

    def check(self, timeout: float) -> Health:
        """The same probe as ``health``: in WAL mode a read never waits for writers."""
        return self.health()

    def health(self) -> Health:
        """Reads the log's end, looks at the file (identity, writability) and, every
        QUICK_CHECK_EVERY seconds, checks its integrity."""
        try:
            self._database.verify()
            end = self._log.end()
            self._database.check_integrity()
        except TransportError as exc:
            self._health.set(False, str(exc))
        else:
            self._health.set(True, f"sqlite database {self.path} (log end at offset {end})")
        return self._health.get()

    def stats(self) -> dict[str, Any]:
        guard = self._database.current_guard()
        fault = guard.fault
        with self._counters_lock:
            return {"path": self.path, "published": self._published, "failed": self._failed,
                    "faults": guard.faults, "fault": fault.kind if fault is not None else None}

    def close(self, timeout: float = 5.0) -> None:
        """Release this transport's readers (their locks), this thread's connection and those of ended threads.

        Connections of threads that still run are not closed under them; they
        refuse further use and are closed when the transport is collected.
        """
        if self._database.closed:
            return
        for child in list(self._children):
            child.close()
        self._database.close()
