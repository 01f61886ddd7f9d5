"""``memory://name``: the whole log in this process, for tests.

Every transport built for the same name in one process shares one log, so
tests can run several runtimes of one asset (as several workers would) and
see the same election and takeover rules as on sqlite and Kafka.
"""

from __future__ import annotations

import bisect
import itertools
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator

from ..wire.protocol import Record, RecordError
from .base import (
    CommandReader,
    DeliveryCallback,
    Follower,
    Health,
    LogEntry,
    Transport,
    TransportOptions,
    decode_calls,
    decode_entry,
)
from .locks import Membership, membership_base


def _remove_folder(path: str, owner: int) -> None:
    """Remove a log's folder, in the process that made it only (a forked child's exit leaves it)."""
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


class MemoryLog:
    """One named log: records in order, current state, committed positions, owners."""

    def __init__(self) -> None:
        self.entries: list[tuple[str | None, bytes | None]] = []
        self.written_at: list[float] = []  # per entry, for calls_since
        self.state: dict[str, dict[str, Record]] = {}
        self.committed: dict[tuple[str, str], int] = {}
        self.owners: dict[tuple[str, str], int] = {}
        self.changed = threading.Condition()
        self._lock_dir: str | None = None

    def lock_dir(self) -> str:
        """A folder of this log's own (the deployment files of its runtimes)."""
        with self.changed:
            if self._lock_dir is None:
                self._lock_dir = tempfile.mkdtemp(prefix="ofa-memory-")
                weakref.finalize(self, _remove_folder, self._lock_dir, os.getpid())  # at exit at the latest
            return self._lock_dir

    def append(self, key: str | None, value: bytes | None) -> int:
        """Raw append (tests use it to write malformed records)."""
        with self.changed:
            self.entries.append((key, value))
            self.written_at.append(time.time())
            if key is not None:
                try:
                    record = Record.from_wire(key, value)
                except RecordError:
                    pass
                else:
                    self.state.setdefault(key, {})[record.id] = record
            self.changed.notify_all()
            return len(self.entries) - 1

    def scan(self, start: int, key: str | None) -> Iterator[tuple[int, str | None, bytes | None]]:
        for offset in range(start, len(self.entries)):
            entry_key, value = self.entries[offset]
            if key is None or entry_key == key:
                yield offset, entry_key, value


_logs: dict[str, MemoryLog] = {}
_logs_lock = threading.Lock()
_reader_ids = itertools.count(1)


def memory_log(name: str) -> MemoryLog:
    with _logs_lock:
        return _logs.setdefault(name, MemoryLog())


class MemoryFollower(Follower):
    def __init__(self, log: MemoryLog, key: str, resume: Follower | None = None) -> None:
        self._log, self._key = log, key
        end = len(log.entries)
        self._position = end if resume is None else min(resume.position, end)
        self._closed = False

    def poll(self, timeout: float) -> list[Record]:
        deadline = time.monotonic() + timeout
        with self._log.changed:
            while not self._closed and self._position >= len(self._log.entries):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._log.changed.wait(remaining)
            found = []
            for _, key, value in self._log.scan(self._position, self._key):
                try:
                    found.append(Record.from_wire(key, value))
                except RecordError:
                    continue
            self._position = len(self._log.entries)
            return found

    @property
    def position(self) -> int:
        return self._position

    def wake(self) -> None:
        with self._log.changed:
            self._log.changed.notify_all()

    def close(self) -> None:
        with self._log.changed:
            self._closed = True
            self._log.changed.notify_all()


class MemoryCommandReader(CommandReader):
    def __init__(self, log: MemoryLog, key: str, group: str) -> None:
        self._log, self._key = log, key
        self._slot = (group, key)
        self._id = next(_reader_ids)
        self._generation = 0
        self._position = 0
        self._closed = False

    @property
    def owns(self) -> bool:
        return self._log.owners.get(self._slot) == self._id

    @property
    def generation(self) -> int:
        return self._generation

    def _acquire(self) -> bool:
        if self.owns:
            return True
        if self._closed or self._slot in self._log.owners:
            return False
        self._log.owners[self._slot] = self._id
        self._generation += 1
        self._catch_up_to = None
        if self._slot not in self._log.committed:
            self._log.committed[self._slot] = len(self._log.entries) - 1
        self._position = self._log.committed[self._slot] + 1
        return True

    def poll(self, timeout: float) -> list[LogEntry]:
        deadline = time.monotonic() + timeout
        with self._log.changed:
            while True:
                if self._acquire() and self._position < len(self._log.entries):
                    entries = [
                        decode_entry(offset, key, value)
                        for offset, key, value in self._log.scan(self._position, None)
                    ]
                    self._position = len(self._log.entries)
                    return entries
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return []
                self._log.changed.wait(remaining)

    def caught_up(self) -> bool:
        with self._log.changed:
            if not self.owns:
                return False
            return self._reached(self._position, lambda: len(self._log.entries))

    def commit(self, offset: int) -> None:
        with self._log.changed:
            if self.owns and offset > self._log.committed.get(self._slot, -1):
                self._log.committed[self._slot] = offset

    def close(self) -> None:
        with self._log.changed:
            self._closed = True
            if self.owns:
                del self._log.owners[self._slot]
            self._log.changed.notify_all()


class MemoryTransport(Transport):
    scheme = "memory"

    def __init__(self, url: str, options: TransportOptions | None = None) -> None:
        super().__init__(url, options)
        self.name = url.split("://", 1)[1] or "default"
        self.log = memory_log(self.name)
        self._published = 0

    def publish(self, record: Record, on_delivery: DeliveryCallback | None = None) -> None:
        self.log.append(record.asset_uuid, record.to_wire())
        self._published += 1
        if on_delivery is not None:
            on_delivery(None)

    def flush(self, timeout: float) -> int:
        return 0

    def snapshot(self, asset_uuid: str) -> dict[str, Record]:
        with self.log.changed:
            return dict(self.log.state.get(asset_uuid, {}))

    def follow(
        self, asset_uuid: str, *, skip_own_writes: bool = False, resume: Follower | None = None
    ) -> Follower:
        return MemoryFollower(self.log, asset_uuid, resume)

    def command_reader(self, asset_uuid: str, group: str) -> CommandReader:
        return MemoryCommandReader(self.log, asset_uuid, group)

    def mark_start(self, asset_uuid: str, group: str) -> None:
        with self.log.changed:
            self.log.committed.setdefault((group, asset_uuid), len(self.log.entries) - 1)

    def end_position(self, asset_uuid: str) -> int:
        with self.log.changed:
            return len(self.log.entries)

    def calls_since(self, asset_uuid: str, since: float) -> list[Record]:
        with self.log.changed:
            start = bisect.bisect_left(self.log.written_at, since)
            rows = list(self.log.scan(start, asset_uuid))
        return decode_calls(rows)

    def membership(self, asset_uuid: str) -> Membership:
        """Scoped to this log: its runtimes are the deployment's processes."""
        return Membership(membership_base(self.log.lock_dir(), asset_uuid))

    def check(self, timeout: float) -> Health:
        return self.health()

    def health(self) -> Health:
        return Health(True, f"in-process log {self.name!r}")

    def stats(self) -> dict[str, int]:
        return {"published": self._published}

    def close(self, timeout: float = 5.0) -> None:
        return None
