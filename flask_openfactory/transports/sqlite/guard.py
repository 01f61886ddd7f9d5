"""Know the sqlite file the log lives in: its identity, integrity and writability.

A process must never acknowledge a write into a file that is no longer the
deployment's log (deleted, replaced, corrupt) or that cannot take writes
(read-only folder). The guard judges the path against what this process
knows, cheaply enough to run before every connection use and after every
write, and heals by itself when the fault goes away.

Identity: each log has a random id, stored inside the database (table
``meta``) and in a small file beside it, ``<database>.log-id``. The id file
is what lets a new process (a respawned worker, the CLI) tell "no log yet"
from "the log was lost": when the database is missing but the id file is
there, nothing creates a new empty database.

Recovery rules (documented in the README):

* put the same file back (rename it back, or a copy with the same log id):
  every process resumes on it within a second, with no restart; a copy still
  being written is not opened while it is shorter than a page or not a whole
  number of pages (SQLite deletes the ``-wal`` beside an empty file it opens,
  under the wal-index every process still maps);
* to start a new, empty log instead, delete ``<database>.log-id`` too: the
  next use creates a new database with a new id;
* a folder made writable again resumes by itself;
* a corrupt file stays refused until a good copy replaces it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import uuid
from typing import Any

from ..errors import TransportError

log = logging.getLogger("flask_openfactory.sqlite")

ID_SUFFIX = ".log-id"
VERIFY_EVERY = 0.25  # seconds between two looks at the path from the hot path
QUICK_CHECK_EVERY = 30.0  # seconds between integrity checks from the health check (it reads the whole file)

SQLITE_MAGIC = b"SQLite format 3\x00"
HEADER_SIZE = 100

DELETED, REPLACED, CORRUPT, READ_ONLY = "deleted", "replaced", "corrupt", "read_only"

Identity = tuple[int, int]  # (st_dev, st_ino)


class LogFault(TransportError):
    """The log file cannot be trusted or written now; nothing is acknowledged into it."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def again(self) -> LogFault:
        """A fresh exception to raise: re-raising one instance from many threads chains their tracebacks."""
        return LogFault(self.kind, str(self))


def id_path(path: str) -> str:
    return path + ID_SUFFIX


def read_log_id(path: str) -> str | None:
    """The log id this deployment recorded beside its database, if any."""
    try:
        with open(id_path(path), encoding="ascii") as f:
            return f.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def write_log_id(path: str, log_id: str) -> None:
    """Best effort, atomic: a folder that refuses it is reported by the writability check."""
    target = id_path(path)
    temporary = f"{target}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="ascii") as f:
            f.write(log_id + "\n")
        os.replace(temporary, target)
    except OSError as exc:
        log.warning("could not record the log id of %s in %s: %s", path, target, exc)


def identity_of(path: str) -> Identity | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def ensure_log_id(conn: sqlite3.Connection) -> str:
    """The database's log id, created on first use (inside the caller's transaction)."""
    conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID")
    conn.execute("INSERT INTO meta (name, value) VALUES ('log_id', ?) ON CONFLICT (name) DO NOTHING",
                 (uuid.uuid4().hex,))
    return str(conn.execute("SELECT value FROM meta WHERE name = 'log_id'").fetchone()[0])


def quick_check(conn: sqlite3.Connection) -> str | None:
    """None when ``PRAGMA quick_check`` finds nothing wrong, else its first findings."""
    try:
        rows = conn.execute("PRAGMA quick_check(5)").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    findings = [str(r[0]) for r in rows]
    return None if findings == ["ok"] else " ".join(" ".join(findings).split())[:500]


def is_corruption(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return True
    text = str(exc)
    return "malformed" in text or "not a database" in text


def unfinished(path: str) -> str | None:
    """Why the file at ``path`` is not (yet) a whole SQLite database, judged without SQLite,
    or None. Opening an empty file with SQLite deletes the ``-wal`` beside it."""
    try:
        with open(path, "rb") as f:
            header = f.read(HEADER_SIZE)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        return "it is gone"
    except OSError as exc:
        return f"it cannot be read: {exc}"
    if len(header) < HEADER_SIZE:
        return f"{size} bytes, less than an SQLite header"
    if not header.startswith(SQLITE_MAGIC):
        return "it does not start with the SQLite header"
    page = int.from_bytes(header[16:18], "big")
    page = 65536 if page == 1 else page
    if page < 512 or size < page or size % page:
        return f"{size} bytes, not a whole number of its {page}-byte pages"
    return None


def _signature(path: str) -> tuple[Any, ...] | None:
    """What must change for a corrupt verdict to be worth re-checking."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class FileGuard:
    """This process's view of one database file: what it is, and whether it may be used now."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.identity: Identity | None = None  # the file this process uses
        self.log_id: str | None = None
        self.fault: LogFault | None = None
        self.epoch = 0  # connections opened under an older epoch are reopened
        self.faults = 0  # faults seen by this process (metrics)
        self._lock = threading.RLock()
        self._checked_at = 0.0
        self._quick_at = 0.0
        self._corrupt: tuple[tuple[Any, ...] | None, str] | None = None  # (signature, findings)

    # -- judging the path ------------------------------------------------------------

    def verify(self, *, force: bool = False) -> LogFault | None:
        """Look at the path (at most every VERIFY_EVERY seconds unless ``force``); return the fault."""
        now = time.monotonic()
        if not force and now - self._checked_at < VERIFY_EVERY:
            return self.fault
        with self._lock:
            self._checked_at = now
            self._set(self._judge())
            return self.fault

    def _judge(self) -> LogFault | None:
        current = identity_of(self.path)
        recorded = read_log_id(self.path)
        if current is None:
            if recorded is None:  # documented recovery: no id file, a new log may be made
                if self.identity is not None:
                    log.warning("sqlite log %s and its id file are gone: a new empty log will be made", self.path)
                    self.identity, self.log_id = None, None
                    self.epoch += 1
                return self._writable()
            return LogFault(DELETED, (
                f"sqlite log {self.path} was deleted (this deployment's log is {recorded}, recorded in "
                f"{id_path(self.path)}): nothing is acknowledged until the file is put back; to start a new "
                f"empty log instead, delete {id_path(self.path)} too"))
        if self._corrupt is not None and self._corrupt[0] == _signature(self.path):
            return self._corruption(self._corrupt[1])
        if self.identity is not None and current != self.identity:
            why = unfinished(self.path)  # a copy being put back: judged without SQLite until whole
            fault = self._not_whole(why) if why is not None else self._examine(recorded)
            if fault is not None:
                return fault
            log.warning("sqlite log %s was put back (log id %s): resuming on it", self.path, self.log_id)
            self.identity = current
            self.epoch += 1
        elif self.identity is None and (recorded is not None or self.log_id is not None):
            why = unfinished(self.path)  # a process new to a recorded log: never open half a copy
            if why is not None:
                return self._not_whole(why)
        return self._writable()

    def _not_whole(self, why: str) -> LogFault:
        return LogFault(REPLACED, (
            f"sqlite log {self.path} is being put back or was replaced by a file that is not a whole SQLite "
            f"database ({why}): nothing is opened or acknowledged in it; when a copy being put back is "
            f"complete, this process resumes on it by itself"))

    def _examine(self, recorded: str | None) -> LogFault | None:
        """A new file at the path: the same log (a good copy put back), or not."""
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, timeout=1.0)
        except sqlite3.Error as exc:
            return LogFault(REPLACED, f"sqlite log {self.path} was replaced by a file that cannot be opened: {exc}")
        try:
            findings = quick_check(conn)
            if findings is not None:
                self._corrupt = (_signature(self.path), findings)
                return self._corruption(findings)
            try:
                row = conn.execute("SELECT value FROM meta WHERE name = 'log_id'").fetchone()
            except sqlite3.Error:
                row = None
        finally:
            conn.close()
        found = str(row[0]) if row else None
        expected = self.log_id or recorded
        if found is None or found != expected:
            return LogFault(REPLACED, (
                f"sqlite log {self.path} was replaced by a different database (log id {found or 'none'}, "
                f"this deployment's is {expected}): nothing is acknowledged into it; put the right file back, "
                f"or delete {id_path(self.path)} and the file to start a new empty log"))
        return None

    def _writable(self) -> LogFault | None:
        folder = os.path.dirname(self.path)
        candidates = [self.path, self.path + "-wal", self.path + "-shm"]
        refused = [p for p in candidates if os.path.exists(p) and not os.access(p, os.R_OK | os.W_OK)]
        if os.path.isdir(folder) and not os.access(folder, os.W_OK | os.X_OK):  # missing: created on open
            refused.insert(0, folder)
        if refused:
            return LogFault(READ_ONLY, (
                f"sqlite log {self.path} cannot take writes: {', '.join(refused)} not writable; make "
                f"{'it' if len(refused) == 1 else 'them'} writable again and this process resumes by itself"))
        return None

    def _corruption(self, findings: str) -> LogFault:
        return LogFault(CORRUPT, (
            f"sqlite log {self.path} is corrupt (PRAGMA quick_check: {findings}): writes are refused; "
            f"replace it with a good copy (same log id) and this process resumes by itself"))

    def _set(self, fault: LogFault | None) -> None:
        previous = self.fault
        if fault is not None and (previous is None or previous.kind != fault.kind):
            self.faults += 1
            log.error("%s", fault)
        elif fault is None and previous is not None:
            log.warning("sqlite log %s usable again (was %s)", self.path, previous.kind)
            self.epoch += 1  # connections opened meanwhile (read-only fallbacks) are reopened
        self.fault = fault

    # -- what connections report ----------------------------------------------------

    def may_create(self) -> bool:
        """A missing database may be created only when no log was recorded for this path."""
        return self.identity is None and read_log_id(self.path) is None

    def admit(self, conn: sqlite3.Connection) -> None:
        """A connection was opened on the path: check a file new to this process before writing to it."""
        with self._lock:
            current = identity_of(self.path)
            if current is None:
                raise self._fail(self._judge() or LogFault(DELETED, f"sqlite log {self.path} vanished while opening"))
            if current != self.identity:
                findings = quick_check(conn)
                if findings is not None:
                    self._corrupt = (_signature(self.path), findings)
                    raise self._fail(self._corruption(findings))

    def adopt(self, log_id: str) -> Identity:
        """The admitted file's log id: accept it as the log, or raise."""
        with self._lock:
            current = identity_of(self.path)
            if current is None:
                raise self._fail(self._judge() or LogFault(DELETED, f"sqlite log {self.path} vanished while opening"))
            expected = self.log_id or read_log_id(self.path)
            if expected is not None and expected != log_id:
                raise self._fail(LogFault(REPLACED, (
                    f"sqlite log {self.path} holds log {log_id}, but this deployment's log is {expected} "
                    f"({id_path(self.path)}): nothing is acknowledged into it; put the right file back, or "
                    f"delete {id_path(self.path)} to adopt this one")))
            if read_log_id(self.path) is None:
                write_log_id(self.path, log_id)
            self.identity, self.log_id, self._corrupt = current, log_id, None
            return current

    def confirm(self, identity: Identity | None) -> None:
        """After a commit: the file written is still the log at the path, else nothing is acknowledged."""
        if identity is not None and identity_of(self.path) == identity and self.fault is None:
            return
        fault = self.verify(force=True)
        raise LogFault(fault.kind if fault else REPLACED, (
            f"{fault or f'sqlite log {self.path} changed during the write'}; the last write went to a file "
            f"that is no longer the log and is not acknowledged"))

    def failed(self, exc: BaseException) -> LogFault | None:
        """An sqlite error: a corrupt file is a fault of its own; others may reveal one on the path."""
        if is_corruption(exc):
            with self._lock:
                self._corrupt = (_signature(self.path), str(exc))
                self._set(self._corruption(str(exc)))
        fault = self.fault if is_corruption(exc) else self.verify(force=True)
        return fault.again() if fault is not None else None

    def integrity(self, conn: sqlite3.Connection) -> LogFault | None:
        """The health check's integrity check, at most every QUICK_CHECK_EVERY seconds."""
        now = time.monotonic()
        if now - self._quick_at < QUICK_CHECK_EVERY:
            return self.fault
        self._quick_at = now
        findings = quick_check(conn)
        if findings is not None:
            with self._lock:
                self._corrupt = (_signature(self.path), findings)
                self._set(self._corruption(findings))
        return self.fault

    def _fail(self, fault: LogFault) -> LogFault:
        self._set(fault)
        return fault.again()
