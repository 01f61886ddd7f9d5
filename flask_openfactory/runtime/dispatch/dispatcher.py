"""Command dispatch: read the asset's log, execute each command once, commit.

Runs in the one process that owns the asset's command log. At-least-once
reading plus duplicate suppression gives exactly-once execution in practice:

* after gaining ownership, the log is read up to its end before anything runs,
  so that commands whose ``_RESULT`` is already in the log (the previous owner
  finished them but died before committing) are not run again;
* a position is committed only once the command's ``_RESULT`` is durable, and
  only when every earlier position is done (commands may finish out of order);
  while commands flow, at most every ``commit_interval`` (a replay after a crash
  reads those again, and the answered ones are suppressed as above).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from ...transports.base import CommandReader, LogEntry, Transport
from ...transports.quiet import Repeats, fault_key
from ...wire.commands import CommandResult, is_command
from ...wire.methods import MethodSpec
from ...wire.protocol import Record
from ..backoff import Backoff
from ..counters import Counters
from ..logs import AssetLog
from ..owned_reading import read_as_owner
from .bookkeeping import Deduper, OffsetTracker
from .recording import ResultRecorder
from .runner import CommandRunner, ContextFactory
from .settings import MAX_RETRY_DELAY, DispatchSettings

_log = logging.getLogger("flask_openfactory.dispatch")


@dataclass(frozen=True, slots=True)
class DispatcherState:
    """The command dispatcher of one process at one moment, for tests, status and metrics.

    A copy: reading it takes no lock the dispatch thread needs, and it does not
    change under the reader's eyes while the role moves.
    """

    settings: DispatchSettings  # what it runs with (the signing keys are never in its repr)
    alive: bool  # its thread runs
    owns: bool  # its reader holds the command log: this process executes the commands
    position: int | None  # the next position of the command log it reads; None without a reader
    recoveries: int  # times it took over the command log
    largest_backlog: int  # most commands held back at once while recovering
    last_error: str | None  # why the command reader last failed, if it did
    reader: str | None  # the open command reader's kind (its class name), None while none is open
    reader_stats: Mapping[str, Any] = field(default_factory=dict)  # that reader's own figures


class Dispatcher:
    """Owns one command reader and the executor that runs the asset's methods."""

    def __init__(
        self,
        settings: DispatchSettings,
        *,
        transport: Transport,
        methods: Callable[[], dict[str, MethodSpec]],
        context: ContextFactory | None = None,
        counters: Counters | None = None,
        on_ownership: Callable[[bool], None] | None = None,
        completed: Any = None,
        eligible: Callable[[], bool] | None = None,
        before_executing: Callable[[], None] | None = None,
        on_result: Callable[[Record], None] | None = None,
        on_unrecorded: Callable[[CommandResult, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_ownership = on_ownership  # told in the dispatch thread when the role moves
        # False once this process is stopping (a gunicorn worker told to exit): it must
        # not take the role, and hands it over at once if it holds it.
        self._eligible = eligible or (lambda: True)
        # Runs after a gain of ownership, before any command: the runtime waits until its
        # book of answered calls has read the log to its end (no replay runs twice).
        self._before_executing = before_executing
        self.log = AssetLog(_log, settings.asset_uuid)
        self._transport = transport
        self.counters: Counters = counters if counters is not None else Counters()
        # Answered correlation ids: the runtime's book, loaded from the log (durable), or a
        # bounded memory of this dispatcher's own answers when used alone.
        self.completed = completed if completed is not None else Deduper(settings.dedupe_size)
        self._offsets = OffsetTracker()
        self._stop = threading.Event()
        self._results = ResultRecorder(
            transport=transport, offsets=self._offsets, counters=self.counters, log=self.log,
            retry_backoff=settings.retry_backoff, on_result=on_result, on_unrecorded=on_unrecorded,
        )
        self._runner = CommandRunner(
            settings, methods=methods, context=context or nullcontext, counters=self.counters,
            completed=self.completed, offsets=self._offsets, recorder=self._results, stop=self._stop,
            log=self.log,
        )
        self._first_poll = threading.Event()
        self._drain_until = float("inf")
        self._next_commit = 0.0  # monotonic: no commit before it while commands flow
        self._quiet = True  # the last live poll brought nothing: commit what is done at once
        self._done_to: int | None = None  # done, not committed yet (the tracker no longer holds it)
        self._thread: threading.Thread | None = None
        self._reader: CommandReader | None = None
        self._backlog: list[LogEntry] = []  # our commands read while catching up after a takeover
        self._owns = False
        self.last_error: str | None = None
        self.recoveries = 0
        self.largest_backlog = 0  # commands held back at once while recovering (memory, status)
        self.reader_faults = Repeats(self.log, "the command reader")

    # -- lifecycle -------------------------------------------------------------

    def start(self, wait: float = 10.0) -> None:
        """Start reading; return once the first attempt at ownership is over.

        On a log with no committed position the owner starts at its end: a
        command sent after ``start`` returns must not fall before that point.
        """
        self._thread = threading.Thread(target=self._run, name="ofa-dispatch", daemon=True)
        self._thread.start()
        if not self._first_poll.wait(wait):
            self.log.warning("the command reader did not answer within %.0fs; still trying", wait)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def owns(self) -> bool:
        return self._owns

    @owns.setter
    def owns(self, value: bool) -> None:
        if value != self._owns:
            self._owns = value
            if self._on_ownership is not None:
                self._on_ownership(value)

    def halt(self) -> None:
        """Start no further command, at once; ``stop`` still drains and releases the log."""
        self._drain_until = time.monotonic()
        self._stop.set()

    def stop(self, timeout: float) -> None:
        """Stop taking commands, let those in flight finish, commit, release the log."""
        # leave time to commit and close; a halt() before keeps its earlier limit
        self._drain_until = min(self._drain_until, time.monotonic() + max(0.0, timeout - 0.2))
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.log.warning("command dispatcher did not stop within %.1fs", timeout)
        idle = not self._runner.running()
        # Idle: join the pool's threads now, so none outlives stop(). A method still
        # running past its timeout cannot be interrupted; its thread is left to finish.
        self._runner.shutdown(wait=idle)

    # -- the loop (``owned_reading.read_as_owner`` calls the steps below, in its order) --

    def _run(self) -> None:
        read_as_owner(self, stop=self._stop, backoff=Backoff(self.settings.retry_backoff, MAX_RETRY_DELAY),
                      idle_wait=self.settings.poll_interval)
        self._drain()

    def open_reader(self) -> CommandReader | None:
        if not self._eligible():  # stopping: never take the role
            self._first_poll.set()
            return None
        self._reader = self._transport.command_reader(self.settings.asset_uuid, self.settings.group)
        return self._reader

    def poll_timeout(self) -> float:
        return 0 if not self._first_poll.is_set() else self.settings.poll_interval

    def keep_reading(self, reader: CommandReader) -> bool:
        if not self._eligible():
            if reader.owns:
                self.log.info("handing the command log over: this process is stopping")
            return False
        self._results.retry_due()
        return True

    def polled(self, reader: CommandReader, entries: list[LogEntry]) -> None:
        self.owns = reader.owns
        if self.reader_faults.failing:
            self.reader_faults.cleared()
            self.last_error = None
        self._first_poll.set()

    def took_over(self) -> None:
        self._backlog = []
        self._offsets.clear()
        self._next_commit = 0.0  # the first commit after recovery moves past the replay at once
        self._done_to = None  # a position of the log as the previous ownership read it
        self.recoveries += 1

    def hold(self, entries: list[LogEntry]) -> None:
        # Hold back only our commands (memory grows with unanswered commands, not with the
        # partition's traffic); results and everything else are handled now: nothing runs
        # for them, and results feed the look-ahead.
        for entry in entries:
            if entry.key == self.settings.asset_uuid and entry.record is not None and is_command(entry.record):
                self._offsets.add(entry.offset)  # nothing after it is committed before it runs
                self._backlog.append(entry)
            else:
                self._runner.handle(entry, redelivered=True)
        self.largest_backlog = max(self.largest_backlog, len(self._backlog))

    def release(self) -> bool:
        if self._before_executing is not None:
            self._before_executing()
        backlog, self._backlog = self._backlog, []
        return self._handle(backlog, redelivered=True)

    def handle(self, entries: list[LogEntry]) -> bool:
        self._quiet = not entries
        return self._handle(entries, redelivered=False)

    def _handle(self, entries: list[LogEntry], *, redelivered: bool) -> bool:
        for entry in entries:
            if entry.record is not None and is_command(entry.record):
                self._wait_for_room()
            if self._stop.is_set():
                return False  # not marked done: the next owner gets it
            self._runner.handle(entry, redelivered=redelivered)
        self._runner.expire_deadlines()
        return True

    def commit(self, reader: CommandReader, *, now: bool = False) -> None:
        """Commit what is done: after a quiet poll or when ``now``, else at most every ``commit_interval``."""
        offset = self._offsets.committable()  # the tracker forgets that prefix: kept here until committed
        if offset is not None:
            self._done_to = offset if self._done_to is None else max(self._done_to, offset)
        at = time.monotonic()
        if self._done_to is None or (not now and not self._quiet and at < self._next_commit):
            return
        self._next_commit = at + self.settings.commit_interval
        offset, self._done_to = self._done_to, None
        reader.commit(offset)

    def finished(self, reader: CommandReader) -> None:
        if not self._stop.is_set():  # handed over: a stop drains once the loop ends
            self._drain(time.monotonic() + self.settings.timeout)

    def failed(self, error: Exception) -> None:
        self.last_error = f"{type(error).__name__}: {error}"
        self.counters.add("dispatch_errors")
        self._first_poll.set()
        self.reader_faults.failed(fault_key(self.last_error), "command reader failed; retrying: %s",
                                  self.last_error, exc_info=error)
        if self._reader is not None:  # what is done is not read again by the next reader, if the log takes it
            try:
                self.commit(self._reader, now=True)
            except Exception as exc:
                self.log.debug("the failed command reader could not commit what is done: %s", exc)
        self._close_reader()

    def _wait_for_room(self) -> None:
        """Run no command while its result could not be recorded: the outgoing queue is
        known full, or the log refused an earlier result. A machine must not move when
        nobody can be told. The command waits in the log, not in memory."""
        if self._results.retry_due():
            self.counters.add("commands_held_unrecorded")
            self.log.warning("the log refuses results: commands wait until it takes the held ones")
            while self._results.retry_due() and not self._stop.is_set():
                self._runner.expire_deadlines()
                self._stop.wait(0.2)
        if self._transport.saturated() is None:
            return
        self.counters.add("commands_held_queue_full")
        self.log.warning("the outgoing queue is full: commands wait until the broker takes records again")
        while self._transport.saturated() is not None and not self._stop.is_set():
            self._runner.expire_deadlines()
            self._stop.wait(0.2)

    def _drain(self, until: float | None = None) -> None:
        """Let the commands in flight finish (bounded), commit, release the log."""
        deadline = min(self._drain_until if until is None else until, time.monotonic() + self.settings.timeout)
        while self._in_flight() and time.monotonic() < deadline:
            self._runner.expire_deadlines()
            self._results.retry_due()
            if self._reader is not None:
                self.commit(self._reader)
            time.sleep(0.02)
        if self._reader is not None:
            self.commit(self._reader, now=True)
        self._close_reader()
        # A held result's position stays uncommitted: the next owner handles its command again.
        for result, _ in self._results.held():
            self.log.error("%s %s: its %s answer was never recorded (the log refused it until this process "
                           "stopped), so the next executor of the log handles the command again",
                           result.method, result.correlation_id, result.status)

    def _in_flight(self) -> bool:
        """A command running, or a result not yet durable (held-back entries never started)."""
        # the methods first: a result leaves them before the recorder has it
        return self._runner.running() or self._results.busy()

    def _close_reader(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:
                self.log.exception("closing the command reader failed")
            self._reader = None
            self.owns = False

    def state(self) -> DispatcherState:
        """A snapshot of this dispatcher (see ``AssetRuntime.dispatcher_state``)."""
        reader = self._reader  # one read: the dispatch thread may replace it meanwhile
        return DispatcherState(
            settings=self.settings,
            alive=self.alive,
            owns=self.owns,
            position=reader.position if reader is not None else None,
            recoveries=self.recoveries,
            largest_backlog=self.largest_backlog,
            last_error=self.last_error,
            reader=type(reader).__name__ if reader is not None else None,
            reader_stats=reader.stats() if reader is not None else {},
        )

    def unrecorded(self) -> list[tuple[CommandResult, str]]:
        """The results of methods that ran and that the log has refused so far, with why."""
        return self._results.held()
