"""Acting on admission: run the admitted commands, answer or refuse the others.

The dispatcher hands each log entry here; ``decide`` (admission) says what it
is, and this module does it: a method runs in a bounded pool of threads with a
deadline, its result (or its timeout, or a rejection) is answered through the
result recorder, and a position is marked done when nothing more is owed to it.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, assert_never

from ...transports.base import LogEntry
from ...wire.commands import ERROR, OK, REJECTED, CommandResult, json_safe, result_record
from ...wire.methods import MethodSpec
from ..counters import COMMANDS_ANSWERED, COMMANDS_REJECTED, RECORDS_SKIPPED, Counters
from ..logs import AssetLog, log_method_error
from .admission import (
    Duplicate,
    Ignore,
    RefuseSilently,
    Reject,
    ResultSeen,
    Run,
    Undecodable,
    Unroutable,
    decide,
)
from .bookkeeping import OffsetTracker
from .recording import ResultRecorder
from .settings import DispatchSettings

ContextFactory = Callable[[], AbstractContextManager[Any]]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Running:
    offset: int
    method: str
    correlation_id: str
    sender_uuid: str
    started: float
    deadline: float
    answered: bool = False


@dataclass(order=True, slots=True)
class _Deadline:
    at: float
    offset: int = field(compare=False)


class CommandRunner:
    """The commands in flight of one dispatcher, and the pool that runs their methods."""

    def __init__(
        self,
        settings: DispatchSettings,
        *,
        methods: Callable[[], dict[str, MethodSpec]],
        context: ContextFactory,
        counters: Counters,
        completed: Any,
        offsets: OffsetTracker,
        recorder: ResultRecorder,
        stop: threading.Event,
        log: AssetLog,
    ) -> None:
        self.settings = settings
        self._methods = methods
        self._context = context
        self.counters = counters
        self.completed = completed  # add(cid), ``cid in``: the answered correlation ids
        self._offsets = offsets
        self._recorder = recorder
        self._stop = stop  # the dispatcher's: set when no further command may start
        self.log = log
        self._running: dict[int, _Running] = {}
        self._deadlines: list[_Deadline] = []
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(settings.concurrency)
        self._executor = ThreadPoolExecutor(
            max_workers=settings.concurrency, thread_name_prefix="ofa-command"
        )

    # -- one entry ---------------------------------------------------------------

    def handle(self, entry: LogEntry, *, redelivered: bool = False) -> None:
        """One log entry; ``redelivered``: part of the backlog read again after gaining ownership."""
        offset = entry.offset
        self._offsets.add(offset)
        decision = decide(entry, self.settings, now=_utcnow, redelivered=redelivered,
                          methods=self._methods(), running=self._is_running, answered=self.completed)
        if decision.command:
            self.counters.add("commands_received")
        match decision:  # the most frequent first: a shared partition carries mostly other records
            case Ignore(skipped):
                if skipped is not None:
                    self.counters.add_labelled(RECORDS_SKIPPED, skipped)
                self._offsets.done(offset)
            case ResultSeen(cid):
                if cid:
                    self.completed.add(cid)
                self._offsets.done(offset)
            case Run(spec, kwargs, cid, sender):
                self._execute(offset, spec, kwargs, cid, sender)
            case Duplicate(method, cid):
                self.counters.add("commands_duplicate")
                self.log.info("suppressed duplicate command %s (%s)", cid, method)
                self._offsets.done(offset)
            case Reject(method, cid, sender, reason, text):
                self._reject(offset, method, cid, sender, reason, text)
            case RefuseSilently(method, cid, reason, text):
                self._refuse_silently(offset, method, cid, reason, text)
            case Unroutable(method, cid):
                self.counters.add("records_unroutable")
                self.completed.add(cid)  # refused: this id never runs later either
                self._offsets.done(offset)
            case Undecodable(error):
                self.counters.add_labelled(RECORDS_SKIPPED, "malformed")
                self.log.warning("skipped undecodable record at %s: %s", offset, error)
                self._offsets.done(offset)
            case _:
                assert_never(decision)

    def _refuse_silently(self, offset: int, method: str, cid: str, reason: str, text: str) -> None:
        """Counted, not answered: a _RESULT under a known id would pass for the genuine answer."""
        self.counters.add_labelled(COMMANDS_REJECTED, reason)
        self.log.warning("refused command %s %s without answering (id already used): %s", method, cid, text)
        self._offsets.done(offset)

    def _is_running(self, cid: str) -> bool:
        with self._lock:
            return any(r.correlation_id == cid and not r.answered for r in self._running.values())

    def _reject(
        self, offset: int, method: str, cid: str | None, sender: str | None, reason: str, text: str
    ) -> None:
        self.counters.add_labelled(COMMANDS_REJECTED, reason)
        if cid is None:
            self.counters.add("commands_unanswerable")
            self.log.warning("dropped command %s at %s with no usable correlation id: %s", method, offset, text)
            self._offsets.done(offset)
            return
        self.log.warning("rejected command %s %s: %s", method, cid, text)
        self._answer(offset, CommandResult(method, cid, sender, REJECTED, error=text))

    # -- running a method ----------------------------------------------------------

    def _execute(
        self, offset: int, spec: MethodSpec, kwargs: dict[str, Any], cid: str, sender: str
    ) -> None:
        while not self._slots.acquire(timeout=self.settings.poll_interval):
            self.expire_deadlines()
            if self._stop.is_set():
                self._offsets.forget(offset)  # never started: the next owner runs it
                return
        # A command read while an earlier one ran: that one's result may since have been
        # refused (its slot is freed only after the attempt), and then nobody could be told.
        while self._recorder.retry_due():
            if self._stop.is_set():
                self._slots.release()
                self._offsets.forget(offset)
                return
            self.expire_deadlines()
            self._stop.wait(0.2)
        now = time.monotonic()
        running = _Running(offset, spec.name, cid, sender, now, now + self.settings.timeout)
        with self._lock:
            self._running[offset] = running
            heapq.heappush(self._deadlines, _Deadline(running.deadline, offset))
        future = self._executor.submit(self._call, spec, kwargs)
        future.add_done_callback(lambda f: self._finished(running, f))

    def _call(self, spec: MethodSpec, kwargs: dict[str, Any]) -> Any:
        with self._context():
            return spec.func(**kwargs)

    def _finished(self, running: _Running, future: Future[Any]) -> None:
        """Answer, then free the slot: the next command starts only after this result was
        offered to the log, so a refusal (the recorder holds it) is known before it can start."""
        try:
            duration = (time.monotonic() - running.started) * 1000.0
            exc = future.exception()
            if exc is None:
                result = CommandResult(running.method, running.correlation_id, running.sender_uuid, OK,
                                       result=json_safe(future.result()), duration_ms=duration)
            else:
                log_method_error(self.log, running.method, running.correlation_id, exc)
                result = CommandResult(running.method, running.correlation_id, running.sender_uuid, ERROR,
                                       error=f"{type(exc).__name__}: {exc}", duration_ms=duration)
            self._settle(running, result)
        finally:
            self._slots.release()

    def expire_deadlines(self) -> None:
        """Answer ERROR for every command running past its timeout (its thread is left to finish)."""
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._deadlines or self._deadlines[0].at > now:
                    return
                item = heapq.heappop(self._deadlines)
                running = self._running.get(item.offset)
            if running is not None and not running.answered:
                self.counters.add("commands_timed_out")
                self._settle(running, CommandResult(
                    running.method, running.correlation_id, running.sender_uuid, ERROR,
                    error=f"timed out after {self.settings.timeout:g}s (the method may still be running)",
                    duration_ms=(now - running.started) * 1000.0))

    def _settle(self, running: _Running, result: CommandResult) -> None:
        with self._lock:
            if running.answered:
                return  # a late finish after a timeout was already reported
            # completed before no longer running: a duplicate read meanwhile must see one or the other
            self.completed.add(running.correlation_id)
            running.answered = True
            self._running.pop(running.offset, None)
        self._answer(running.offset, result)

    def _answer(self, offset: int, result: CommandResult) -> None:
        """Publish the result; the position is done once it is durable."""
        self.counters.add_labelled(COMMANDS_ANSWERED, result.status.lower())
        if result.correlation_id:  # answered, even REJECTED: that id never runs later
            self.completed.add(result.correlation_id)
        self._recorder.record(offset, result, result_record(self.settings.asset_uuid, result))

    # -- the dispatcher's view -------------------------------------------------------

    def running(self) -> bool:
        """A method runs whose command is not answered yet."""
        with self._lock:
            return any(not r.answered for r in self._running.values())

    def shutdown(self, wait: bool) -> None:
        """Start nothing more; ``wait``: join the pool's threads (never wait for a method past its timeout)."""
        self._executor.shutdown(wait=wait, cancel_futures=True)
