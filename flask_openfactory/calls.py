"""What this process knows of the asset's calls: the log's memory of what was answered.

Every process of a deployment keeps a ``CallBook``: loaded from the log at
start (the commands and results written within the max age) and kept current
by the process's follower. It answers three questions, whichever process
asks and however recently it started:

* has this correlation id been answered? (the executor's duplicate
  suppression: a takeover, a reload or a restart never runs a replay);
* what was the answer? (an HTTP retry with the same ``X-Correlation-ID``, and
  ``GET /ofa/results/<id>``);
* wait for the answer of a call just written (the HTTP method route).

Memory is bounded by time (entries older than the window are forgotten: a
command that old is refused as expired anyway) and by a hard cap.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable

from .commands import CommandResult, EnvelopeError, is_command, is_result, parse_envelope
from .protocol import COMMAND_SUFFIX, Record


class CallConflict(ValueError):
    """A correlation id already used for another call (another method or other arguments)."""


@dataclass(slots=True)
class CallEntry:
    method: str
    arguments: dict[str, Any] | None  # None: learnt from a result only
    result: CommandResult | None
    seen: float  # monotonic, for the time window
    answered: bool = False  # a result exists (perhaps not yet read back: the executor's own mark)


class CallBook:
    """Correlation ids of the asset's recent calls, with their results; bounded and thread-safe.

    Duck-compatible with the dispatcher's ``Deduper`` (``add``, ``in``):
    an id is "in" the book once it is answered.
    """

    def __init__(self, window: float, cap: int) -> None:
        self.window = window
        self.cap = cap
        self._entries: OrderedDict[str, CallEntry] = OrderedDict()
        self._changed = threading.Condition()
        self.evicted_early = 0  # forgotten inside the window because of the cap (a metric)

    # -- learning ----------------------------------------------------------------

    def observe(self, records: Iterable[Record]) -> None:
        """Commands and results read from the log (any process's)."""
        for record in records:
            if is_result(record):
                try:
                    result = CommandResult.from_record(record)
                except Exception:  # anyone may write to the log
                    continue
                if result.correlation_id:
                    self.answered(result)
            elif is_command(record):
                try:
                    envelope = parse_envelope(record.value)
                except EnvelopeError:
                    continue
                self._learn(envelope.correlation_id, record.id[: -len(COMMAND_SUFFIX)], envelope.arguments, None)

    def answered(self, result: CommandResult) -> None:
        """A result that is durable in the log (read back, or delivered by this process)."""
        if result.correlation_id:
            self._learn(result.correlation_id, result.method, None, result)

    def add(self, cid: str) -> None:
        """An id answered without a readable result (the dispatcher's bookkeeping)."""
        with self._changed:
            entry = self._entries.get(cid)
            if entry is None:
                self._store(cid, CallEntry("", None, None, time.monotonic(), answered=True))
            else:
                entry.answered = True

    def _learn(self, cid: str, method: str, arguments: dict[str, Any] | None, result: CommandResult | None) -> None:
        with self._changed:
            entry = self._entries.get(cid)
            if entry is None:
                self._store(cid, CallEntry(method, arguments, result, time.monotonic(), answered=result is not None))
            else:
                entry.method = entry.method or method
                if entry.arguments is None:
                    entry.arguments = arguments
                if entry.result is None and result is not None:
                    entry.result = result
                    entry.answered = True
            if result is not None:
                self._changed.notify_all()

    def _store(self, cid: str, entry: CallEntry) -> None:
        """Called with the lock held."""
        self._entries[cid] = entry
        self._entries.move_to_end(cid)
        horizon = entry.seen - self.window
        while self._entries:
            oldest_id, oldest = next(iter(self._entries.items()))
            if oldest.seen >= horizon and len(self._entries) <= self.cap:
                break
            if oldest.seen >= horizon:
                self.evicted_early += 1
            del self._entries[oldest_id]

    # -- asking ------------------------------------------------------------------

    def __contains__(self, cid: object) -> bool:
        """Answered (a result, or marked answered by ``add``)."""
        with self._changed:
            entry = self._entries.get(cid)  # type: ignore[call-overload]
            return entry is not None and entry.answered

    def __len__(self) -> int:
        with self._changed:
            return len(self._entries)

    def get(self, cid: str) -> CallEntry | None:
        with self._changed:
            return self._entries.get(cid)

    def check_same_call(self, cid: str, method: str, arguments: dict[str, Any]) -> CallEntry | None:
        """The entry of ``cid`` if it was this call; CallConflict if the id names another call."""
        with self._changed:
            entry = self._entries.get(cid)
        if entry is None:
            return None
        if entry.method and entry.method != method:
            raise CallConflict(
                f"correlation id {cid} was already used for a call of {entry.method!r}, not {method!r}; "
                "use a new id for a new call"
            )
        if entry.arguments is not None and entry.arguments != arguments:
            raise CallConflict(
                f"correlation id {cid} was already used for {method!r} with other arguments; "
                "use a new id for a new call"
            )
        return entry

    def wait(self, cid: str, timeout: float) -> CommandResult | None:
        """The result of ``cid`` once it is in the book, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                entry = self._entries.get(cid)
                if entry is not None and entry.result is not None:
                    return entry.result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)
