"""The executing worker's command reader, fed by the follower instead of a second fetch.

Every process follows its asset's partition; the one that executes commands
used to read the same partition again with a consumer of its own, so each
record cost it two fetches and two passes in Python. Once its reader owns
the log and has read up to where the tap starts, it takes the follower's pass instead: the
follower hands it what a command reader keeps (commands, results, undecodable
records of our key, and other assets' records, so that the committed position
moves past them), with how far the log has been covered, and the reader's own
consumer is paused.

Recovery after a takeover still reads with the reader's own consumer from the
committed position: a replay runs nothing twice whatever the follower does.
The reader leaves the tap, and reads with its own consumer from where the tap
stopped, whenever the follower goes away (closed after a fault), goes back
(a recreated or truncated partition: the reader's own rule for that applies)
or the tap outgrows ``LIMIT`` while the executor is busy: its own consumer
then paces the reading again.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..base import LogEntry

LIMIT = 10_000  # entries waiting in a tap before it is dropped (its reader is that far behind)


class CommandTap:
    """Entries of the followed partition from ``start`` on, handed from the follower's thread."""

    def __init__(self, start: int) -> None:
        self.start = start  # the follower's position when the tap was opened: nothing before it comes
        self._covered = start  # every offset before it has been handed over or was not a reader's
        self._entries: list[LogEntry] = []
        self._ready = threading.Condition(threading.Lock())
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def feed(self, entries: Sequence[LogEntry], covered: int) -> None:
        """The follower read up to ``covered``; ``entries`` are what a command reader keeps of it."""
        with self._ready:
            if self._closed:
                return
            if covered < self._covered or (entries and entries[0].offset < self._covered):
                self._close()  # the follower went back (the log was recreated): the reader has a rule for that
                return
            self._covered = covered
            if entries:  # coverage alone wakes nobody: the reader learns it with its next entries
                self._entries.extend(entries)
                if len(self._entries) > LIMIT:
                    self._close()
                    return
                self._ready.notify()

    def take(self, timeout: float) -> tuple[list[LogEntry], int] | None:
        """What was handed over since the last take, and how far it covers (waits up to ``timeout``
        for something new); None once the tap is closed: the reader reads on by itself."""
        with self._ready:
            if not self._entries and not self._closed:
                self._ready.wait(timeout)
            if self._closed:
                return None
            entries, self._entries = self._entries, []
            return entries, self._covered

    def close(self) -> None:
        with self._ready:
            self._close()

    def _close(self) -> None:
        self._closed = True
        self._entries = []
        self._ready.notify_all()
