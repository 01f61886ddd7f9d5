"""A reader's place in the sqlite log, kept true when the file is put back from an older copy.

Offsets are rowids: in a log put back from a copy taken before its last
writes, the next rows take the offsets of the lost ones again. A reader that
kept only its offset would skip those rows, or wait past them for good. So a
cursor also keeps when the row at its offset was written. Each time this
process has resumed on a new file (the guard's epoch moved), it looks whether
that row is still there; if not, it goes back to the last row written before
it and reads on from there, so what was written since is read, not skipped.
"""

from __future__ import annotations

import logging

from .log import Row, SqliteLog

__all__ = ["Cursor"]

log = logging.getLogger("flask_openfactory.sqlite")


class Cursor:
    """The offset read up to, when the row there was written, and the file's epoch then."""

    def __init__(self, log: SqliteLog, position: int, *, mark: float | None = None,
                 epoch: int | None = None) -> None:
        self._log = log
        self.epoch = log.epoch() if epoch is None else epoch  # first: the read below may move it
        self.position = position
        self.mark = log.written_at(position) if mark is None else mark

    def resumed(self) -> Cursor:
        """A cursor for a new reader that goes on where this one stopped."""
        return Cursor(self._log, self.position, mark=self.mark, epoch=self.epoch)

    def scan(self, key: str) -> list[Row]:
        """The key's rows after the position; the position moves past them (and other keys' rows)."""
        rows, position, mark = self._log.scan(key, self.position)
        epoch = self._log.epoch()
        if epoch != self.epoch:  # a new file since the last look (perhaps under this very scan)
            back = self._log.rewound(self.position, self.mark)
            if back is not None:
                back_mark = self._log.written_at(back)
                rows, position, mark = self._log.scan(key, back)
                log.error("sqlite log %s no longer holds offset %d as it was read (put back from an older "
                          "copy?): reading on from offset %d, the last row written before it",
                          self._log.path, self.position, back)
                self.position, self.mark = back, back_mark
            self.epoch = epoch  # only once looked at: a look cut short by a fault is taken again
        if position != self.position:
            self.position, self.mark = position, mark
        return rows
