"""Reads that follow writes: wait until this process has applied the log up to its end.

A read that must answer at least what the log held when the read began asks
the transport where the log ends, then waits until the process's follower has
applied that far (etcd's linearizable reads work the same way). The end
lookup is shared: readers that arrive while a lookup is in flight join the
next one, never one that started before they arrived (it might miss a write
they must see), so a burst of reads costs one or two lookups.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class _Round:
    __slots__ = ("done", "value", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value = 0
        self.error: BaseException | None = None


class SharedLookup:
    """Single-flight ``lookup()`` where each caller gets a result started after it called."""

    def __init__(self, lookup: Callable[[], int]) -> None:
        self._lookup = lookup
        self._cond = threading.Condition()
        self._running: _Round | None = None
        self._queued: _Round | None = None
        self.lookups = 0  # how many lookups ran (shared by the readers that joined them)

    @property
    def queued(self) -> bool:
        """Readers wait for a lookup that starts once the running one ends (they came after it began)."""
        return self._queued is not None

    def __call__(self, timeout: float) -> int:
        with self._cond:
            if self._queued is not None:  # not started yet: it starts after we arrived
                current, leader = self._queued, False
            elif self._running is None:
                current, leader = _Round(), True
                self._running = current
            else:
                current, leader = _Round(), True
                self._queued = current
        if not leader:
            return self._result(current, timeout)
        if current is not self._running:
            deadline = time.monotonic() + timeout
            with self._cond:  # wait for the lookup that started before us to finish
                while self._running is not None:
                    if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                        break
                self._running = current
                if self._queued is current:
                    self._queued = None
        try:
            current.value = self._lookup()
            self.lookups += 1
        except BaseException as exc:
            current.error = exc
        finally:
            current.done.set()
            with self._cond:
                if self._running is current:
                    self._running = None
                self._cond.notify_all()
        return self._result(current, timeout)

    @staticmethod
    def _result(current: _Round, timeout: float) -> int:
        if not current.done.wait(timeout):
            raise TimeoutError("the log's end could not be read in time")
        if current.error is not None:
            raise current.error
        return current.value


class AppliedPosition:
    """How far this process's follower has applied the log; readers wait on it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._position = -1

    def reset(self) -> None:
        with self._cond:
            self._position = -1

    def moved_to(self, position: int) -> None:
        """The follower's position. It goes back only when the log did (a sqlite log put back
        from an older copy, a recreated topic): readers then wait for the new log's end."""
        with self._cond:
            previous, self._position = self._position, position
            if position > previous:
                self._cond.notify_all()

    @property
    def value(self) -> int:
        return self._position

    def wait_for(self, end: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._position >= end, timeout)
