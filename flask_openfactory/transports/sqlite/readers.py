"""Reading an asset's log: every process's follower, and the one executor's command reader.

Both walk the log through ``SqliteLog`` (its end, a key's rows, the wake-up of
local writes) and poll for other processes' writes. The command reader owns
its (group, asset) only while it holds the ``flock`` on the pair's lock file:
the kernel drops the lock the moment its holder dies, so another process takes
over on its next poll, with no lease to expire.
"""

from __future__ import annotations

import os
import threading
import time

from ...wire.protocol import Record, RecordError
from ..base import CommandReader, Follower, LogEntry, decode_entry
from ..locks import HostLock
from .committed import CommittedPositions
from .cursor import Cursor
from .database import POLL_INTERVAL
from .log import SqliteLog

__all__ = ["SqliteCommandReader", "SqliteFollower"]


class SqliteFollower(Follower):
    def __init__(self, log: SqliteLog, asset_uuid: str, resume: Follower | None = None) -> None:
        self._log, self._key = log, asset_uuid
        self._cursor: Cursor
        if isinstance(resume, SqliteFollower):
            self._cursor = resume._cursor.resumed()
        else:
            end, written_at = log.last()
            self._cursor = Cursor(log, end, mark=written_at) if resume is None else Cursor(log, resume.position)
        self._closed = False

    def poll(self, timeout: float) -> list[Record]:
        """Return as soon as the key has decodable records; other keys' writes do not wake the caller."""
        deadline = time.monotonic() + max(timeout, 0.0)
        wakeup = self._log.wakeup()
        while not self._closed:
            ticket = wakeup.ticket()
            rows = self._cursor.scan(self._key)
            records = []
            for _, key, value in rows:
                try:
                    records.append(Record.from_wire(key, value))
                except RecordError:
                    continue
            if records:
                return records
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wakeup.wait(ticket, min(POLL_INTERVAL, remaining))
        return []

    @property
    def position(self) -> int:
        return self._cursor.position

    def wake(self) -> None:
        self._log.wakeup().notify()

    def close(self) -> None:
        self._closed = True


class SqliteCommandReader(CommandReader):
    """Owner of one (group, asset) while it holds the flock on the pair's lock file.

    Returns only the asset's own entries: the log is keyed, so other assets'
    entries never need to be skipped past, and the position still advances to
    the end of the log for ``caught_up``.
    """

    def __init__(
        self, log: SqliteLog, positions: CommittedPositions, asset_uuid: str, group: str, lock_path: str
    ) -> None:
        self._log, self._positions, self._key, self._group = log, positions, asset_uuid, group
        self.lock_path = lock_path
        self._mutex = threading.Lock()
        self._pid = os.getpid()
        self._owns = False
        self._generation = 0
        self._cursor: Cursor | None = None  # set on each gain of ownership
        self._closed = False
        self._lock = HostLock(self.lock_path)

    @property
    def owns(self) -> bool:
        return self._owns and not self._closed and self._pid == os.getpid()

    @property
    def generation(self) -> int:
        return self._generation

    def _acquire(self) -> bool:
        """Try the lock (called with the mutex held); on success resume from the committed position."""
        if self._owns or self._closed or self._pid != os.getpid():
            return self.owns
        if not self._lock.try_acquire():
            return False
        try:
            self._cursor = Cursor(self._log, self._positions.claim_start(self._group, self._key))
        except BaseException:
            self._lock.release()
            raise
        self._generation += 1
        self._catch_up_to = None
        self._owns = True
        return True

    def poll(self, timeout: float) -> list[LogEntry]:
        deadline = time.monotonic() + max(timeout, 0.0)
        wakeup = self._log.wakeup()
        while True:
            ticket = wakeup.ticket()
            with self._mutex:
                if self._closed or self._pid != os.getpid():
                    return []
                if self._acquire():
                    assert self._cursor is not None  # set by _acquire
                    rows = self._cursor.scan(self._key)
                    if rows:
                        return [decode_entry(offset, key, value) for offset, key, value in rows]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            wakeup.wait(ticket, min(POLL_INTERVAL, remaining))

    def caught_up(self) -> bool:
        with self._mutex:
            if not self.owns or self._cursor is None:
                return False
            return self._reached(self._cursor.position, self._log.end)

    def commit(self, offset: int) -> None:
        """Stored at once; ignored unless this reader owns the pair (as in memory.py)."""
        if self.owns:
            self._positions.store(self._group, self._key, offset)

    def close(self) -> None:
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._lock.close()
            self._owns = False
        if self._pid == os.getpid():
            self._log.wakeup().notify()  # let a waiting reader in this process take over now
