"""One sqlite database file, opened per thread and per process, written in retried transactions.

Every connection is this thread's, in this process: a new one after a fork
or after the guard saw the file change (a thread never shares one, and a
process never uses or closes its parent's). Writers are serialised by SQLite
itself (WAL mode); a write is acknowledged only once the guard confirms the
file written is still the log at the path.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..errors import TransportBusy, TransportError
from .forking import Connection, close_connections, gate, keep_unused, register
from .guard import FileGuard
from .schema import create_schema

__all__ = ["POLL_INTERVAL", "SqliteDatabase"]

T = TypeVar("T")

POLL_INTERVAL = 0.025  # how often a waiting follower or reader looks for other processes' writes


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


class SqliteDatabase:
    """The connections of one transport to its database file, and the guard that judges the file."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout  # the transport's publish_timeout: how long a locked database is waited for
        self.closed = False
        self._local = threading.local()
        self._schema_pid = 0  # schema is ensured once per process, on the first connection
        self.guard = FileGuard(self.path)
        self._guard_pid = os.getpid()
        # Every connection opened in this process, closed by close() or when the database
        # object is collected (a finalizer holds the list, so the collector never meets them).
        self._holders: list[Connection] = []
        self._holders_lock = threading.Lock()
        weakref.finalize(self, close_connections, self._holders).atexit = False  # daemon threads may still run

    # connections

    def current_guard(self) -> FileGuard:
        """This process's guard: a child judges the file afresh (its parent's view is not its own)."""
        if self._guard_pid != os.getpid():
            self.guard, self._guard_pid = FileGuard(self.path), os.getpid()
        return self.guard

    def _holder(self) -> Connection:
        """This thread's connection in this process, opened on first use and after the file changed.

        Raises LogFault while the file is deleted, replaced, corrupt or read-only.
        """
        if self.closed:
            raise TransportError(f"sqlite transport {self.path} is closed")
        with gate.passage():
            guard = self.current_guard()
            fault = guard.verify()
            if fault is not None:
                raise fault.again()
            holder: Connection | None = getattr(self._local, "holder", None)
            pid = os.getpid()
            if holder is None or holder.pid != pid or holder.epoch != guard.epoch:
                if holder is not None:
                    self._retire(holder, guard)
                self._local.holder = None
                holder = self._open(pid)
                self._local.holder = holder
            return holder

    def connection(self) -> sqlite3.Connection:
        """This thread's connection in this process: one per thread, a new one after a fork."""
        return self._holder().conn

    @staticmethod
    def _retire(holder: Connection, guard: FileGuard) -> None:
        """Close a connection of an earlier epoch; one on a file that is no longer the log is kept,
        unused: closing it would checkpoint into that file and delete the ``-wal`` by name."""
        if holder.pid == os.getpid() and holder.identity is not None and holder.identity == guard.identity:
            try:
                holder.conn.close()
            except sqlite3.Error:
                pass
        else:
            keep_unused(holder)

    def _open(self, pid: int) -> Connection:
        guard = self.current_guard()
        mode = "rwc" if guard.may_create() else "rw"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            conn = sqlite3.connect(  # used by its thread only; closed by close() or the finalizer
                f"file:{urllib.parse.quote(self.path)}?mode={mode}", uri=True,
                timeout=max(self.timeout, 0.0), isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise guard.failed(exc) or TransportError(f"cannot open sqlite database {self.path}: {exc}") from exc
        holder = Connection(conn, pid, guard.epoch)
        register(holder)
        with self._holders_lock:
            close_connections(self._holders, only_ended=True)  # threads that came and went
            self._holders.append(holder)
        try:
            mode = self.retry(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone()[0], conn, "enable WAL")
            if str(mode).lower() != "wal":
                raise TransportError(
                    f"sqlite database {self.path} cannot use WAL journal mode (got {mode!r}); "
                    "is it on a network file system?"
                )
            conn.execute("PRAGMA synchronous=NORMAL")
            guard.admit(conn)
            if self._schema_pid != pid or guard.identity is None:
                log_id = self.transaction(conn, create_schema, "create the schema")
                self._schema_pid = pid
            else:
                log_id = guard.log_id or ""
            holder.identity = guard.adopt(log_id)
        except sqlite3.Error as exc:
            conn.close()
            raise guard.failed(exc) or TransportError(f"cannot set up sqlite database {self.path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return holder

    # transactions and reads

    def retry(self, attempt: Callable[[], T], conn: sqlite3.Connection, what: str) -> T:
        """Run ``attempt`` until it is not refused as busy, within ``timeout``.

        The connection's busy timeout already waits inside SQLite; this loop
        covers the cases where SQLite answers busy at once (lock upgrades,
        journal mode changes) and narrows the busy timeout to the time left.
        """
        budget = max(self.timeout, 0.0)
        deadline = time.monotonic() + budget
        delay = 0.002
        narrowed = False
        try:
            while True:
                try:
                    return attempt()
                except sqlite3.OperationalError as exc:
                    remaining = deadline - time.monotonic()
                    if not _is_busy(exc):
                        raise
                    if remaining <= 0:
                        raise TransportBusy(
                            f"sqlite database {self.path} stayed locked for {budget:g}s "
                            f"while trying to {what}"
                        ) from exc
                    time.sleep(min(delay, remaining))
                    delay = min(delay * 2, POLL_INTERVAL)
                    conn.execute(f"PRAGMA busy_timeout = {max(int((deadline - time.monotonic()) * 1000), 0)}")
                    narrowed = True
        finally:
            if narrowed:
                conn.execute(f"PRAGMA busy_timeout = {int(budget * 1000)}")

    def transaction(self, conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T], what: str) -> T:
        """Run ``work`` in one write transaction, retried while the database is locked."""

        def attempt() -> T:
            with gate.passage():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return result

        return self.retry(attempt, conn, what)

    def write(self, work: Callable[[sqlite3.Connection], T], what: str) -> T:
        """One transaction, acknowledged only if the file it went to is still the log at the path."""
        holder = self._holder()
        try:
            result = self.transaction(holder.conn, work, what)
        except TransportError:
            raise
        except sqlite3.Error as exc:
            fault = self.current_guard().failed(exc)
            raise TransportError(f"sqlite database {self.path}: cannot {what}: {fault or exc}") from exc
        self.current_guard().confirm(holder.identity)
        return result

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with gate.passage():
                return self.connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            fault = self.current_guard().failed(exc)
            raise TransportError(f"sqlite database {self.path}: cannot read: {fault or exc}") from exc

    # health

    def verify(self) -> None:
        """Look at the file now (identity, writability); raise its fault."""
        fault = self.current_guard().verify(force=True)
        if fault is not None:
            raise fault.again()

    def check_integrity(self) -> None:
        """Every QUICK_CHECK_EVERY seconds, check the file's integrity; raise its fault."""
        guard = self.current_guard()
        with gate.passage():
            fault = guard.integrity(self.connection())
        if fault is not None:
            raise fault.again()

    def close(self) -> None:
        """Refuse further use; close this thread's connection and those of ended threads.

        Connections of threads that still run are not closed under them; they
        refuse further use and are closed when this object is collected.
        """
        self.closed = True
        self._local.holder = None
        current = threading.current_thread()
        with self._holders_lock:  # this thread's and those of ended threads; the others at collection
            for holder in [h for h in self._holders if h.thread() is current]:
                self._holders.remove(holder)
                if holder.pid == os.getpid():
                    with gate.passage():
                        holder.conn.close()
            close_connections(self._holders, only_ended=True)
