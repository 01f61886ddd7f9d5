"""Writing the dispatcher's answers to the log, and holding those the log refuses.

A method that ran cannot be undone: when the log refuses its result (a disk
full, a broker gone), the result is kept here and written again, with backoff,
until the log takes it. Its position stays uncommitted meanwhile, and the
dispatcher starts no further command while anything is held.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ...transports.base import Transport
from ...wire.commands import REJECTED, CommandResult
from ...wire.protocol import Record
from ..backoff import backoff_delay
from ..counters import Counters
from ..logs import AssetLog
from .bookkeeping import OffsetTracker
from .settings import MAX_RETRY_DELAY


@dataclass(slots=True)
class _Unrecorded:
    """A result the log refused: its method ran, so it is written again until the log takes it."""

    result: CommandResult
    record: Record
    reason: str
    failures: int  # refusals before the current one; the next wait doubles with each, up to MAX_RETRY_DELAY
    next_try: float  # monotonic
    sending: bool = False  # an attempt's delivery report is awaited


class ResultRecorder:
    """Publishes result records; a position is done once its record is durable."""

    def __init__(
        self,
        *,
        transport: Transport,
        offsets: OffsetTracker,
        counters: Counters,
        log: AssetLog,
        retry_backoff: float,
        on_result: Callable[[Record], None] | None = None,
        on_unrecorded: Callable[[CommandResult, str], None] | None = None,
    ) -> None:
        self._transport = transport
        self._offsets = offsets
        self._counters = counters
        self._log = log
        self._retry_backoff = retry_backoff
        self._on_result = on_result  # told of each result record once it is durable
        self._on_unrecorded = on_unrecorded  # told when the log refuses the result of a method that ran
        self._lock = threading.Lock()
        self._undelivered = 0  # results published and not yet reported durable or failed
        self._unrecorded: dict[int, _Unrecorded] = {}  # by offset: results the log refused, retried

    def record(self, offset: int, result: CommandResult, record: Record) -> None:
        """One attempt to write a result; one the log refuses is held and retried by ``retry_due``."""

        def delivered(error: Exception | None) -> None:
            with self._lock:
                self._undelivered -= 1
                cleared = error is None and self._unrecorded.pop(offset, None) is not None \
                    and not self._unrecorded
            if cleared:
                self._log.info("the log takes results again: every held result is recorded")
            if error is None:
                self._offsets.done(offset)
                if self._on_result is not None:
                    self._on_result(record)
            else:
                self._hold(offset, result, record, error)

        with self._lock:
            self._undelivered += 1
        try:
            self._transport.publish(record, on_delivery=delivered)
        except Exception as exc:
            with self._lock:
                self._undelivered -= 1
            self._hold(offset, result, record, exc)

    def _hold(self, offset: int, result: CommandResult, record: Record, error: BaseException | str) -> None:
        """Keep a refused result: the position stays uncommitted and no further command runs
        until the log takes it (a machine must not move while nobody can be told)."""
        reason = str(error) if isinstance(error, str) else f"{type(error).__name__}: {error}"
        now = time.monotonic()
        with self._lock:
            held = self._unrecorded.get(offset)
            first = held is None
            failures = 0 if held is None else held.failures + 1
            delay = backoff_delay(self._retry_backoff, failures, MAX_RETRY_DELAY)
            self._unrecorded[offset] = _Unrecorded(result, record, reason, failures, now + delay)
        self._counters.add("result_delivery_failures")
        if not first:
            return
        self._counters.add("results_unrecorded")
        if result.status == REJECTED:  # it did not run: nothing to tell a caller but the refusal, later
            self._log.error("the log refused the rejection of %s %s (%s): it is written again until the log "
                            "takes it, and no further command runs meanwhile", result.method,
                            result.correlation_id, reason)
            return
        self._log.error("%s %s ran, but the log refused its result (%s): it is written again until the log "
                        "takes it, and no further command runs meanwhile", result.method,
                        result.correlation_id, reason)
        if self._on_unrecorded is not None:
            self._on_unrecorded(result, reason)

    def retry_due(self) -> bool:
        """Write the held results whose time has come; True while any is held."""
        now = time.monotonic()
        with self._lock:
            due = [(offset, held) for offset, held in self._unrecorded.items()
                   if not held.sending and held.next_try <= now]
            for _, held in due:
                held.sending = True
        for offset, held in due:
            self.record(offset, held.result, held.record)
        with self._lock:
            return bool(self._unrecorded)

    def busy(self) -> bool:
        """A result not yet durable: published and unreported, or held."""
        with self._lock:
            return self._undelivered > 0 or bool(self._unrecorded)

    def held(self) -> list[tuple[CommandResult, str]]:
        """The results the log has refused so far, with why."""
        with self._lock:
            return [(held.result, held.reason) for held in self._unrecorded.values()]
