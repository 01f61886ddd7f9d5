"""One log line per fault and one when it clears, with a count of what was held back.

A fault that lasts (a broker away, a log file gone) makes retry loops and
librdkafka repeat the same complaint many times a second; the operator needs
to know that it started, that it goes on, and when it ended.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

_NUMBERS = re.compile(r"\d+")


class Repeats:
    """Collapses repeated failures of one kind (``key``) into a first line and a cleared line."""

    def __init__(self, log: logging.Logger | logging.LoggerAdapter[logging.Logger], what: str) -> None:
        self._log = log
        self._what = what
        self._lock = threading.Lock()
        self._key: str | None = None
        self.held_back = 0  # lines not written during the current fault
        self.total_held_back = 0  # over this object's life (metrics)
        self.faults = 0

    @property
    def failing(self) -> bool:
        return self._key is not None

    def failed(self, key: str, message: str, *args: Any, level: int = logging.ERROR,
               exc_info: Any = None) -> bool:
        """Log the first failure of ``key``; count the repeats. True when the line was written."""
        with self._lock:
            if key == self._key:
                self.held_back += 1
                self.total_held_back += 1
                return False
            self._key, self.held_back = key, 0
            self.faults += 1
        self._log.log(level, message + " (repeats are counted, not logged, until %s works again)",
                      *args, self._what, exc_info=exc_info)
        return True

    def cleared(self) -> None:
        """The fault is over: one line saying so, with the number of lines held back."""
        with self._lock:
            if self._key is None:
                return
            held, self._key, self.held_back = self.held_back, None, 0
        self._log.warning("%s works again (%d repeated line(s) were held back)", self._what, held)


def fault_key(text: str) -> str:
    """Lines that differ only in numbers (ports, milliseconds, counts) are the same fault."""
    return _NUMBERS.sub("#", text)
