"""The dispatcher's two memories: which calls were answered, which positions are done.

Both are shared between the dispatch thread, the method threads and the
transport's delivery reports, so each takes its own small lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class Deduper:
    """Correlation ids already answered, bounded and oldest forgotten first."""

    def __init__(self, size: int) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def add(self, cid: str) -> None:
        with self._lock:
            self._seen[cid] = None
            self._seen.move_to_end(cid)
            while len(self._seen) > self._size:
                self._seen.popitem(last=False)

    def __contains__(self, cid: object) -> bool:
        with self._lock:
            return cid in self._seen

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


class OffsetTracker:
    """Positions in flight; the committable position is the end of the done prefix."""

    def __init__(self) -> None:
        self._open: dict[int, bool] = {}
        self._lock = threading.Lock()

    def add(self, offset: int) -> None:
        with self._lock:
            self._open.setdefault(offset, False)

    def done(self, offset: int) -> None:
        with self._lock:
            if offset in self._open:
                self._open[offset] = True

    def committable(self) -> int | None:
        """Highest offset whose whole prefix is done; forgets that prefix."""
        with self._lock:
            best = None
            for offset in sorted(self._open):
                if not self._open[offset]:
                    break
                best = offset
                del self._open[offset]
            return best

    def forget(self, offset: int) -> None:
        with self._lock:
            self._open.pop(offset, None)

    def pending(self) -> int:
        with self._lock:
            return sum(1 for done in self._open.values() if not done)

    def clear(self) -> None:
        with self._lock:
            self._open.clear()
