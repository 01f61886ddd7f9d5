"""What this process keeps about SQLite handles, so that none of them crosses a fork.

Connections remember the pid and thread that opened them; a child opens its
own and never closes the parent's (closing an inherited SQLite handle can
disturb the parent's locks). Every SQLite call passes the fork gate, so fork
never copies a lock held by another thread; the wake-ups of local waiters
are per process too.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref

from ..fork_gate import ForkGate
from .guard import Identity

__all__ = ["Connection", "Wakeup", "close_connections", "gate", "keep_unused", "register", "wakeup_for"]


class Connection:
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


def close_connections(holders: list[Connection], *, only_ended: bool = False) -> None:
    """Close this process's connections (never a parent's handle): all, or those whose thread ended.

    Explicit, because the garbage collector finalizes a cycle's objects in no
    set order and Python 3.13 warns about a connection deallocated unclosed.
    """
    with gate.passage():
        for holder in list(holders):
            if holder.pid == os.getpid() and (not only_ended or holder.thread_ended):
                holders.remove(holder)
                try:
                    holder.conn.close()
                except sqlite3.Error:
                    pass


class Wakeup:
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
_connections: weakref.WeakSet[Connection] = weakref.WeakSet()
_wakeups: dict[str, Wakeup] = {}
# Strong references to a parent's connections: when fork discards the parent's
# other threads (and their thread-locals), these must not be deallocated, as
# deallocation closes the handle. They are kept, unused, for the child's life.
_held_over_fork: list[Connection] = []
_inherited: list[Connection] = []
# Every SQLite call passes it, so fork never copies a lock held by another thread.
gate = ForkGate()


def _before_fork() -> None:
    gate.close()  # first: a thread inside may still need the registry lock to step out
    _registry_lock.acquire()
    _held_over_fork.extend(_connections)


def _after_fork_in_parent() -> None:
    _held_over_fork.clear()
    _registry_lock.release()
    gate.open()


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    gate.reset()
    _inherited.extend(_held_over_fork)
    _held_over_fork.clear()
    _connections.clear()
    _wakeups.clear()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)


def register(holder: Connection) -> None:
    """Know a new connection of this process, so that a fork keeps it referenced in the child."""
    with _registry_lock:
        _connections.add(holder)


def keep_unused(holder: Connection) -> None:
    """Keep a connection referenced and never use or close it again (a parent's, or one on a lost file)."""
    _inherited.append(holder)


def wakeup_for(path: str) -> Wakeup:
    """This process's wake-up for the database at ``path``."""
    with _registry_lock:
        wakeup = _wakeups.get(path)
        if wakeup is None:
            wakeup = _wakeups[path] = Wakeup()
        return wakeup
