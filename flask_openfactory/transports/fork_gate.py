"""Hold ``fork()`` until no thread of this process is inside a SQLite call.

SQLite keeps, in process memory, which of the process's connections hold which
lock on a file. A child forked while a thread was inside a read or a write
inherits that bookkeeping without the kernel locks behind it, and its own new
connections are then refused as "database is locked" for good. The parent's
other threads keep running during ``fork`` (the dispatcher polls, a publish
commits), so the gate makes ``fork`` wait for them to step out and keeps them
out until the child exists.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

FORK_WAIT = 10.0  # longest a fork waits for SQLite calls to end (one is bounded by publish_timeout)


class ForkGate:
    """Counts the threads inside SQLite calls; ``close`` waits for none and lets no new one in."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """A fresh gate: in a child, whose parent's threads (and their passages) are gone."""
        self._cond = threading.Condition(threading.Lock())
        self._inside = 0
        self._closed = False
        self._local = threading.local()

    @contextmanager
    def passage(self) -> Iterator[None]:
        """Be inside a SQLite call; re-entrant, so a nested call never waits for a fork."""
        depth: int = getattr(self._local, "depth", 0)
        if depth == 0:
            with self._cond:
                self._cond.wait_for(lambda: not self._closed)
                self._inside += 1
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                with self._cond:
                    self._inside -= 1
                    if self._inside == 0:
                        self._cond.notify_all()

    def close(self, timeout: float = FORK_WAIT) -> None:
        """Before fork: wait until no thread is inside (a stuck one is waited for ``timeout``)."""
        if getattr(self._local, "depth", 0):
            return  # fork from inside a SQLite call: waiting would wait for ourselves
        with self._cond:
            self._closed = True
            if not self._cond.wait_for(lambda: self._inside == 0, timeout):
                logger.warning(
                    "forking while %d thread(s) are still inside SQLite calls after %gs: "
                    "the child may find the database locked", self._inside, timeout,
                )

    def open(self) -> None:
        """After fork, in the parent: let the waiting threads in."""
        with self._cond:
            self._closed = False
            self._cond.notify_all()
