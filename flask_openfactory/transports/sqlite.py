"""``sqlite:///path.db``: the embedded default, one machine, every process.

All gunicorn workers, the CLI and restarts of the app share one database file.
The log is an append-only table whose rowid is the offset; ``state`` holds the
last record per (asset, attribute), written in the same transaction as the log
row so a snapshot never disagrees with the log; ``committed`` holds each
command reader group's position. Writers are serialised by SQLite itself (WAL
mode), so offsets become visible in increasing order with no gaps to wait for.

The one executor of an asset is elected with ``flock`` on a lock file next to
the database: the kernel drops the lock the moment its holder dies, so another
process takes over on its next poll, with no lease to expire.

Nothing opened here is used across ``fork``: connections and lock files
remember the pid that opened them; a child opens its own and never closes the
parent's (closing an inherited SQLite handle can disturb the parent's locks).
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

from ..protocol import Record, RecordError
from .base import (
    CommandReader,
    ConfigurationError,
    DeliveryCallback,
    Follower,
    Health,
    HealthTracker,
    LogEntry,
    Transport,
    TransportBusy,
    TransportError,
    TransportOptions,
    decode_calls,
    decode_entry,
)
from .fork_gate import ForkGate
from .locks import HostLock, Membership, lock_path, membership_base
from .sqlite_guard import FileGuard, Identity, ensure_log_id

T = TypeVar("T")

POLL_INTERVAL = 0.025  # how often a waiting follower or reader looks for other processes' writes
BATCH = 1000  # rows read per query, so a long backlog is returned in bounded pieces

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


# --- fork bookkeeping -------------------------------------------------------


class _Connection:
    """A connection tagged with the process and thread that opened it (weakly referenceable),
    the file it was opened on and the guard's epoch at that time."""

    __slots__ = ("conn", "pid", "identity", "epoch", "thread", "__weakref__")

    def __init__(self, conn: sqlite3.Connection, pid: int, epoch: int = 0) -> None:
        self.conn, self.pid, self.epoch = conn, pid, epoch
        self.identity: Identity | None = None
        self.thread = weakref.ref(threading.current_thread())

    @property
    def thread_ended(self) -> bool:
        thread = self.thread()
        return thread is None or not thread.is_alive()


def _close_connections(holders: list[_Connection], *, only_ended: bool = False) -> None:
    """Close this process's connections (never a parent's handle): all, or those whose thread ended.

    Explicit, because the garbage collector finalizes a cycle's objects in no
    set order and Python 3.13 warns about a connection deallocated unclosed.
    """
    with _gate.passage():
        for holder in list(holders):
            if holder.pid == os.getpid() and (not only_ended or holder.thread_ended):
                holders.remove(holder)
                try:
                    holder.conn.close()
                except sqlite3.Error:
                    pass


class _Wakeup:
    """Wakes this process's waiters at once after a local publish; others poll."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._count = 0

    def ticket(self) -> int:
        with self._cond:
            return self._count

    def notify(self) -> None:
        with self._cond:
            self._count += 1
            self._cond.notify_all()

    def wait(self, ticket: int, timeout: float) -> None:
        """Wait until something happened since ``ticket`` was taken, or ``timeout``."""
        with self._cond:
            self._cond.wait_for(lambda: self._count != ticket, timeout)


_registry_lock = threading.Lock()
_connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
_wakeups: dict[str, _Wakeup] = {}
# Strong references to a parent's connections: when fork discards the parent's
# other threads (and their thread-locals), these must not be deallocated, as
# deallocation closes the handle. They are kept, unused, for the child's life.
_held_over_fork: list[_Connection] = []
_inherited: list[_Connection] = []
# Every SQLite call passes it, so fork never copies a lock held by another thread.
_gate = ForkGate()


def _before_fork() -> None:
    _gate.close()  # first: a thread inside may still need the registry lock to step out
    _registry_lock.acquire()
    _held_over_fork.extend(_connections)


def _after_fork_in_parent() -> None:
    _held_over_fork.clear()
    _registry_lock.release()
    _gate.open()


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    _gate.reset()
    _inherited.extend(_held_over_fork)
    _held_over_fork.clear()
    _connections.clear()
    _wakeups.clear()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


def _wakeup_for(path: str) -> _Wakeup:
    with _registry_lock:
        wakeup = _wakeups.get(path)
        if wakeup is None:
            wakeup = _wakeups[path] = _Wakeup()
        return wakeup


# --- URL and path -----------------------------------------------------------


def database_path(url: str) -> str:
    """The absolute database path of a ``sqlite:///`` URL; a ConfigurationError names what is wrong."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    usage = "use sqlite:///relative/path.db or sqlite:////absolute/path.db"
    if not rest.startswith("/"):
        raise ConfigurationError(f"sqlite URL {url!r} needs three slashes before the path: {usage}")
    raw = rest[1:]
    if not raw:
        raise ConfigurationError(f"sqlite URL {url!r} names no database file: {usage}")
    if raw == ":memory:" or raw.startswith("file:") or "?" in raw:
        raise ConfigurationError(
            f"sqlite URL {url!r}: only a plain file path is supported (the database is shared "
            f"between processes): {usage}"
        )
    if raw.endswith("/"):
        raise ConfigurationError(f"sqlite URL {url!r} names a directory, not a database file: {usage}")
    return os.path.abspath(raw)


def check_location(path: str) -> None:
    """Fail early on a path SQLite could never use, without creating anything.

    The directory must be writable, not only the file: WAL mode and the
    command reader lock files create files next to the database. A folder or
    file that exists but is read-only now is a fault the guard reports (503,
    readiness) and heals from, not a configuration error.
    """
    if os.path.isdir(path):
        raise ConfigurationError(f"sqlite database path {path} is a directory; name a file inside it")
    existing = os.path.dirname(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigurationError(f"cannot create sqlite database {path}: {existing} is not a directory")
    if existing != os.path.dirname(path) and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigurationError(
            f"cannot use sqlite database {path}: directory {existing} is not writable"
        )


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


# --- transport --------------------------------------------------------------


class SqliteTransport(Transport):
    scheme = "sqlite"

    def __init__(self, url: str, options: TransportOptions | None = None) -> None:
        super().__init__(url, options)
        self.path = database_path(url)
        check_location(self.path)
        self._local = threading.local()
        self._schema_pid = 0  # schema is ensured once per process, on the first connection
        self._closed = False
        self._counters_lock = threading.Lock()
        self._published = 0
        self._failed = 0
        self._health = HealthTracker()
        self._children: weakref.WeakSet[SqliteFollower | SqliteCommandReader] = weakref.WeakSet()
        self.guard = FileGuard(self.path)
        self._guard_pid = os.getpid()
        # Every connection this transport opened in this process, closed by close() or when the
        # transport is collected (a finalizer holds the list, so the collector never meets them).
        self._holders: list[_Connection] = []
        self._holders_lock = threading.Lock()
        weakref.finalize(self, _close_connections, self._holders).atexit = False  # daemon threads may still run

    # connections

    def _guard(self) -> FileGuard:
        """This process's guard: a child judges the file afresh (its parent's view is not its own)."""
        if self._guard_pid != os.getpid():
            self.guard, self._guard_pid = FileGuard(self.path), os.getpid()
        return self.guard

    def _holder(self) -> _Connection:
        """This thread's connection in this process, opened on first use and after the file changed.

        Raises LogFault while the file is deleted, replaced, corrupt or read-only.
        """
        if self._closed:
            raise TransportError(f"sqlite transport {self.path} is closed")
        with _gate.passage():
            guard = self._guard()
            fault = guard.verify()
            if fault is not None:
                raise fault.again()
            holder: _Connection | None = getattr(self._local, "holder", None)
            pid = os.getpid()
            if holder is None or holder.pid != pid or holder.epoch != guard.epoch:
                if holder is not None:
                    self._retire(holder, guard)
                self._local.holder = None
                holder = self._open(pid)
                self._local.holder = holder
            return holder

    def _conn(self) -> sqlite3.Connection:
        return self._holder().conn

    def connection(self) -> sqlite3.Connection:
        """This thread's connection in this process: one per thread, a new one after a fork
        (a connection must never cross either), so that tests can check exactly that."""
        return self._conn()

    @staticmethod
    def _retire(holder: _Connection, guard: FileGuard) -> None:
        """Close a connection of an earlier epoch; one on a file that is no longer the log is kept,
        unused: closing it would checkpoint into that file and delete the ``-wal`` by name."""
        if holder.pid == os.getpid() and holder.identity is not None and holder.identity == guard.identity:
            try:
                holder.conn.close()
            except sqlite3.Error:
                pass
        else:
            _inherited.append(holder)

    def _open(self, pid: int) -> _Connection:
        guard = self._guard()
        mode = "rwc" if guard.may_create() else "rw"
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            conn = sqlite3.connect(  # used by its thread only; closed by close() or the finalizer
                f"file:{urllib.parse.quote(self.path)}?mode={mode}", uri=True,
                timeout=max(self.options.publish_timeout, 0.0), isolation_level=None,
                check_same_thread=False,
            )
        except (OSError, sqlite3.Error) as exc:
            raise guard.failed(exc) or TransportError(f"cannot open sqlite database {self.path}: {exc}") from exc
        holder = _Connection(conn, pid, guard.epoch)
        with _registry_lock:
            _connections.add(holder)
        with self._holders_lock:
            _close_connections(self._holders, only_ended=True)  # threads that came and went
            self._holders.append(holder)
        try:
            mode = self._retry(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone()[0], conn, "enable WAL")
            if str(mode).lower() != "wal":
                raise TransportError(
                    f"sqlite database {self.path} cannot use WAL journal mode (got {mode!r}); "
                    "is it on a network file system?"
                )
            conn.execute("PRAGMA synchronous=NORMAL")
            guard.admit(conn)
            if self._schema_pid != pid or guard.identity is None:
                log_id = self._transaction(conn, _create_schema, "create the schema")
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

    def _retry(self, attempt: Callable[[], T], conn: sqlite3.Connection, what: str) -> T:
        """Run ``attempt`` until it is not refused as busy, within ``publish_timeout``.

        The connection's busy timeout already waits inside SQLite; this loop
        covers the cases where SQLite answers busy at once (lock upgrades,
        journal mode changes) and narrows the busy timeout to the time left.
        """
        budget = max(self.options.publish_timeout, 0.0)
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

    def _transaction(
        self, conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T], what: str
    ) -> T:
        """Run ``work`` in one write transaction, retried while the database is locked."""

        def attempt() -> T:
            with _gate.passage():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return result

        return self._retry(attempt, conn, what)

    def _write(self, work: Callable[[sqlite3.Connection], T], what: str) -> T:
        """One transaction, acknowledged only if the file it went to is still the log at the path."""
        holder = self._holder()
        try:
            result = self._transaction(holder.conn, work, what)
        except TransportError:
            raise
        except sqlite3.Error as exc:
            fault = self._guard().failed(exc)
            raise TransportError(f"sqlite database {self.path}: cannot {what}: {fault or exc}") from exc
        self._guard().confirm(holder.identity)
        return result

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with _gate.passage():
                return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            fault = self._guard().failed(exc)
            raise TransportError(f"sqlite database {self.path}: cannot read: {fault or exc}") from exc

    def _wakeup(self) -> _Wakeup:
        return _wakeup_for(self.path)

    # log access shared by followers and readers

    def _end(self) -> int:
        """The offset of the last log entry (0 for an empty log: offsets start at 1)."""
        end: int = self._read("SELECT coalesce(max(offset), 0) FROM log")[0][0]
        return end

    def _scan(self, key: str, after: int) -> tuple[list[tuple[Any, ...]], int]:
        """The key's rows after ``after`` and the position reached (past other keys' rows too)."""
        end = self._end()
        if end <= after:
            return [], after
        rows = self._read(
            "SELECT offset, key, value FROM log WHERE key = ? AND offset > ? AND offset <= ? "
            "ORDER BY offset LIMIT ?",
            (key, after, end, BATCH),
        )
        return rows, rows[-1][0] if len(rows) == BATCH else end

    def _claim_start(self, group: str, key: str) -> int:
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

        return self._write(work, f"read the committed position of group {group!r}")

    def _store_commit(self, group: str, key: str, offset: int) -> None:
        self._write(
            lambda conn: conn.execute(
                "INSERT INTO committed (grp, key, offset) VALUES (?, ?, ?) "
                "ON CONFLICT (grp, key) DO UPDATE SET offset = max(committed.offset, excluded.offset)",
                (group, key, offset),
            ),
            f"commit offset {offset} of group {group!r}",
        )

    # Transport API

    def publish(self, record: Record, on_delivery: DeliveryCallback | None = None) -> None:
        """Durable when this returns (WAL, synchronous=NORMAL): delivery is reported at once.

        When this raises, nothing was written and ``on_delivery`` is not called.
        """
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

        try:
            self._write(work, f"publish {record.id!r} of {record.asset_uuid!r}")
        except TransportError:
            with self._counters_lock:
                self._failed += 1
            raise
        with self._counters_lock:
            self._published += 1
        self._wakeup().notify()
        if on_delivery is not None:
            on_delivery(None)

    def flush(self, timeout: float) -> int:
        return 0  # publish is synchronous: nothing is ever pending

    def snapshot(self, asset_uuid: str) -> dict[str, Record]:
        rows = self._read("SELECT id, record FROM state WHERE key = ?", (asset_uuid,))
        found: dict[str, Record] = {}
        for attribute_id, text in rows:
            try:
                found[attribute_id] = Record.from_wire(asset_uuid, text)
            except RecordError:
                continue  # only decodable records are ever stored; tolerate a hand-edited row
        return found

    def follow(self, asset_uuid: str, *, skip_own_writes: bool = False) -> Follower:
        follower = SqliteFollower(self, asset_uuid)
        self._children.add(follower)
        return follower

    def mark_start(self, asset_uuid: str, group: str) -> None:
        self._claim_start(group, asset_uuid)

    def end_position(self, asset_uuid: str) -> int:
        return self._end()

    def _offset_at(self, moment: float) -> int:
        """The first offset written at or after ``moment``: a binary search on the rowid.

        ``written_at`` grows with the offset (writers are serialised), so this
        costs about 20 point reads on a log of a million rows and needs no index.
        """
        low: int = self._read("SELECT coalesce(min(offset), 1) FROM log")[0][0]
        high = self._end() + 1
        while low < high:
            middle = (low + high) // 2
            row = self._read("SELECT offset, written_at FROM log WHERE offset >= ? ORDER BY offset LIMIT 1",
                             (middle,))
            if not row or row[0][1] >= moment:
                high = middle
            else:
                low = row[0][0] + 1
        return low

    def calls_since(self, asset_uuid: str, since: float) -> list[Record]:
        start = self._offset_at(since)
        rows = self._read(
            "SELECT offset, key, value FROM log WHERE key = ? AND offset >= ? "
            "AND (instr(value, '_CMD\"') > 0 OR instr(value, '_RESULT\"') > 0) ORDER BY offset",
            (asset_uuid, start),
        )
        return decode_calls(rows)

    def command_reader(self, asset_uuid: str, group: str) -> CommandReader:
        reader = SqliteCommandReader(self, asset_uuid, group)
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
            guard = self._guard()
            fault = guard.verify(force=True)
            if fault is not None:
                raise fault.again()
            end = self._end()
            with _gate.passage():
                fault = guard.integrity(self._conn())
            if fault is not None:
                raise fault.again()
        except TransportError as exc:
            self._health.set(False, str(exc))
        else:
            self._health.set(True, f"sqlite database {self.path} (log end at offset {end})")
        return self._health.get()

    def stats(self) -> dict[str, Any]:
        guard = self._guard()
        fault = guard.fault
        with self._counters_lock:
            return {"path": self.path, "published": self._published, "failed": self._failed,
                    "faults": guard.faults, "fault": fault.kind if fault is not None else None}

    def close(self, timeout: float = 5.0) -> None:
        """Release this transport's readers (their locks), this thread's connection and those of ended threads.

        Connections of threads that still run are not closed under them; they
        refuse further use and are closed when the transport is collected.
        """
        if self._closed:
            return
        for child in list(self._children):
            child.close()
        self._closed = True
        self._local.holder = None
        current = threading.current_thread()
        with self._holders_lock:  # this thread's and those of ended threads; the others at collection
            for holder in [h for h in self._holders if h.thread() is current]:
                self._holders.remove(holder)
                if holder.pid == os.getpid():
                    with _gate.passage():
                        holder.conn.close()
            _close_connections(self._holders, only_ended=True)


def _create_schema(conn: sqlite3.Connection) -> str:
    """The tables, and the log's id (created with the log)."""
    for statement in _SCHEMA:
        conn.execute(statement)
    return ensure_log_id(conn)


class SqliteFollower(Follower):
    def __init__(self, transport: SqliteTransport, asset_uuid: str) -> None:
        self._transport, self._key = transport, asset_uuid
        self._position = transport._end()
        self._closed = False

    def poll(self, timeout: float) -> list[Record]:
        """Return as soon as the key has decodable records; other keys' writes do not wake the caller."""
        deadline = time.monotonic() + max(timeout, 0.0)
        wakeup = self._transport._wakeup()
        while not self._closed:
            ticket = wakeup.ticket()
            rows, self._position = self._transport._scan(self._key, self._position)
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
        return self._position

    def wake(self) -> None:
        self._transport._wakeup().notify()

    def close(self) -> None:
        self._closed = True


class SqliteCommandReader(CommandReader):
    """Owner of one (group, asset) while it holds the flock on the pair's lock file.

    Returns only the asset's own entries: the log is keyed, so other assets'
    entries never need to be skipped past, and the position still advances to
    the end of the log for ``caught_up``.
    """

    def __init__(self, transport: SqliteTransport, asset_uuid: str, group: str) -> None:
        self._transport, self._key, self._group = transport, asset_uuid, group
        self.lock_path = transport.lock_path(asset_uuid, group)
        self._mutex = threading.Lock()
        self._pid = os.getpid()
        self._owns = False
        self._generation = 0
        self._position = 0
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
            position = self._transport._claim_start(self._group, self._key)
        except BaseException:
            self._lock.release()
            raise
        self._position = position
        self._generation += 1
        self._owns = True
        return True

    def poll(self, timeout: float) -> list[LogEntry]:
        deadline = time.monotonic() + max(timeout, 0.0)
        wakeup = self._transport._wakeup()
        while True:
            ticket = wakeup.ticket()
            with self._mutex:
                if self._closed or self._pid != os.getpid():
                    return []
                if self._acquire():
                    rows, self._position = self._transport._scan(self._key, self._position)
                    if rows:
                        return [decode_entry(offset, key, value) for offset, key, value in rows]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            wakeup.wait(ticket, min(POLL_INTERVAL, remaining))

    def caught_up(self) -> bool:
        with self._mutex:
            return self.owns and self._position >= self._transport._end()

    def commit(self, offset: int) -> None:
        """Stored at once; ignored unless this reader owns the pair (as in memory.py)."""
        if self.owns:
            self._transport._store_commit(self._group, self._key, offset)

    def close(self) -> None:
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._lock.close()
            self._owns = False
        if self._pid == os.getpid():
            self._transport._wakeup().notify()  # let a waiting reader in this process take over now
