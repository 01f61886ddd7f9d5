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

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..wire.commands import ERROR, OK, REJECTED, CommandResult, canonical_uuid
from ..wire.protocol import COMMAND_SUFFIX, RESULT_SUFFIX, Record


class CallConflict(ValueError):
    """A correlation id already used for another call (another method or other arguments)."""


@dataclass(slots=True)
class CallEntry:
    """One call, kept small: a hash of its arguments and its result's text, parsed when asked."""

    method: str
    arguments_key: int | None  # None: learnt from a result only
    result_value: str | None  # the _RESULT record's VALUE
    seen: float  # monotonic, for the time window
    answered: bool = False  # a result exists (perhaps not yet read back: the executor's own mark)
    unrecorded: str | None = None  # it ran here, and the log refused its result for this reason

    @property
    def result(self) -> CommandResult | None:
        return None if self.result_value is None else CommandResult.from_value(self.method, self.result_value)


def arguments_key(arguments: dict[str, Any]) -> int:
    """Equal for equal arguments (within one process): what an idempotency key is compared on."""
    return hash(frozenset((str(k), str(v)) for k, v in arguments.items()))


class CallBook:
    """Correlation ids of the asset's recent calls, with their results; bounded and thread-safe.

    Duck-compatible with the dispatcher's ``Deduper`` (``add``, ``in``):
    an id is "in" the book once it is answered.
    """

    def __init__(self, window: float, cap: int) -> None:
        self.window = window
        self.cap = cap
        self._entries: OrderedDict[str, CallEntry] = OrderedDict()
        self._lock = threading.Lock()
        # One event per awaited id: a result wakes the requests waiting for it, not every waiting
        # request thread of the process (a gthread worker has 8; each wake-up is a GIL hand-off).
        self._waiters: dict[str, tuple[threading.Event, int]] = {}
        self.evicted_early = 0  # forgotten inside the window because of the cap (a metric)

    # -- learning ----------------------------------------------------------------

    def observe(self, records: Iterable[Record]) -> None:
        """Commands and results read from the log (any process's); anything malformed is skipped."""
        for record in records:
            rid, value = record.id, record.value
            if not isinstance(value, str):
                continue
            if rid.endswith(RESULT_SUFFIX):
                method, data = rid[: -len(RESULT_SUFFIX)], _json_object(value)
                cid = data.get("correlation_id") if data else None
                if isinstance(cid, str) and data and data.get("status") in (OK, ERROR, REJECTED):
                    self._learn(cid, method, None, value)
            elif rid.endswith(COMMAND_SUFFIX):
                data = _json_object(value)
                header = data.get("header") if data else None
                arguments = data.get("arguments") if data else None
                if not isinstance(header, dict):
                    continue
                try:
                    cid = canonical_uuid(header.get("correlation_id"))
                except ValueError:
                    continue
                key = arguments_key(arguments) if isinstance(arguments, dict) else arguments_key({})
                self._learn(cid, rid[: -len(COMMAND_SUFFIX)], key, None)

    def answered(self, result: CommandResult) -> None:
        """A result that is durable in the log (read back, or delivered by this process)."""
        if result.correlation_id:
            self._learn(result.correlation_id, result.method, None, result.to_value())

    def add(self, cid: str) -> None:
        """An id answered without a readable result (the dispatcher's bookkeeping)."""
        with self._lock:
            entry = self._entries.get(cid)
            if entry is None:
                self._store(cid, CallEntry("", None, None, time.monotonic(), answered=True))
            else:
                entry.answered = True

    def _learn(self, cid: str, method: str, key: int | None, result_value: str | None) -> None:
        with self._lock:
            entry = self._entries.get(cid)
            if entry is None:
                self._store(cid, CallEntry(method, key, result_value, time.monotonic(),
                                           answered=result_value is not None))
            else:
                entry.method = entry.method or method
                if entry.arguments_key is None:
                    entry.arguments_key = key
                if entry.result_value is None and result_value is not None:
                    entry.result_value = result_value
                    entry.answered = True
                    entry.unrecorded = None
            if result_value is not None:
                self._wake(cid)

    def unrecorded(self, result: CommandResult, reason: str) -> None:
        """This process ran the call and the log refused its result (the executor writes it again)."""
        if not result.correlation_id:
            return
        with self._lock:
            entry = self._entries.get(result.correlation_id)
            if entry is None:
                entry = CallEntry(result.method, None, None, time.monotonic(), answered=True)
                self._store(result.correlation_id, entry)
            if entry.result_value is None:
                entry.unrecorded = reason
                self._wake(result.correlation_id)

    def _wake(self, cid: str) -> None:
        """Called with the lock held."""
        waiting = self._waiters.get(cid)
        if waiting is not None:
            waiting[0].set()

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
        with self._lock:
            entry = self._entries.get(cid)  # type: ignore[call-overload]
            return entry is not None and entry.answered

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, cid: str) -> CallEntry | None:
        with self._lock:
            return self._entries.get(cid)

    def check_same_call(self, cid: str, method: str, arguments: dict[str, Any]) -> CallEntry | None:
        """The entry of ``cid`` if it was this call; CallConflict if the id names another call."""
        with self._lock:
            entry = self._entries.get(cid)
        if entry is None:
            return None
        if entry.method and entry.method != method:
            raise CallConflict(
                f"correlation id {cid} was already used for a call of {entry.method!r}, not {method!r}; "
                "use a new id for a new call"
            )
        if entry.arguments_key is not None and entry.arguments_key != arguments_key(arguments):
            raise CallConflict(
                f"correlation id {cid} was already used for {method!r} with other arguments; "
                "use a new id for a new call"
            )
        return entry

    def wait(self, cid: str, timeout: float) -> CommandResult | None:
        """The result of ``cid`` once it is in the book; None after ``timeout``, or at once when
        the call ran here and its result is held (``get(cid).unrecorded`` says why)."""
        with self._lock:
            entry = self._entries.get(cid)
            if entry is not None and (entry.result_value is not None or entry.unrecorded is not None):
                return entry.result
            event, count = self._waiters.get(cid) or (threading.Event(), 0)
            self._waiters[cid] = (event, count + 1)
        try:
            event.wait(timeout)
        finally:
            with self._lock:
                event, count = self._waiters[cid]
                if count > 1:
                    self._waiters[cid] = (event, count - 1)
                else:
                    del self._waiters[cid]
                entry = self._entries.get(cid)
        return entry.result if entry is not None else None


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # anyone may write to the log
        return None
    return value if isinstance(value, dict) else None
