"""Command dispatch: read the asset's log, execute each command once, commit.

Runs in the one process that owns the asset's command log. At-least-once
reading plus duplicate suppression gives exactly-once execution in practice:

* after gaining ownership, the log is read up to its end before anything runs,
  so that commands whose ``_RESULT`` is already in the log (the previous owner
  finished them but died before committing) are not run again;
* a position is committed only once the command's ``_RESULT`` is durable, and
  only when every earlier position is done (commands may finish out of order).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .commands import (
    ERROR,
    OK,
    REJECTED,
    ArgumentLimits,
    CommandResult,
    Envelope,
    EnvelopeError,
    is_command,
    is_result,
    json_safe,
    parse_envelope,
    result_correlation_id,
    result_record,
)
from .logs import AssetLog, log_method_error
from .methods import ArgumentError, MethodSpec
from .protocol import COMMAND_SUFFIX, Record, validate_identifier
from .quiet import Repeats, fault_key
from .signing import MAX_CLOCK_SKEW, SigningKeys, envelope_message
from .transports.base import CommandReader, LogEntry, Transport

_log = logging.getLogger("flask_openfactory.dispatch")

# A reader that failed is retried at least this often: a log that heals (a file put
# back, a folder writable again, a broker back) is resumed within seconds, unasked.
MAX_RETRY_DELAY = 2.0

ContextFactory = Callable[[], AbstractContextManager[Any]]


@dataclass(slots=True)
class DispatchSettings:
    asset_uuid: str
    group: str
    max_age: float = 300.0  # seconds; older commands are REJECTED as expired
    timeout: float = 60.0  # per command; reported as ERROR when exceeded
    concurrency: int = 1  # commands run in order by default: machines care
    dedupe_size: int = 10_000
    poll_interval: float = 0.2
    retry_backoff: float = 0.5
    signing_keys: SigningKeys | None = field(default=None, repr=False)  # None: signatures not checked
    allowed_senders: frozenset[str] | None = None  # None: any sender
    max_clock_skew: float = MAX_CLOCK_SKEW  # signed commands from further ahead are refused
    argument_limits: ArgumentLimits = field(default_factory=ArgumentLimits)  # bigger commands are REJECTED


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


def _routable(name: str) -> bool:
    try:
        validate_identifier("method name", name)
    except ValueError:
        return False
    return True


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


@dataclass(slots=True)
class _Running:
    offset: int
    method: str
    correlation_id: str
    sender_uuid: str
    started: float
    deadline: float
    answered: bool = False


@dataclass(slots=True)
class _Unrecorded:
    """A result the log refused: its method ran, so it is written again until the log takes it."""

    result: CommandResult
    record: Record
    reason: str
    delay: float  # before the next attempt; doubles up to MAX_RETRY_DELAY
    next_try: float  # monotonic
    sending: bool = False  # an attempt's delivery report is awaited


@dataclass(order=True, slots=True)
class _Deadline:
    at: float
    offset: int = field(compare=False)


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


class Dispatcher:
    """Owns one command reader and the executor that runs the asset's methods."""

    def __init__(
        self,
        settings: DispatchSettings,
        *,
        transport: Transport,
        methods: Callable[[], dict[str, MethodSpec]],
        context: ContextFactory | None = None,
        counters: Counter[str] | None = None,
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
        self._on_result = on_result  # told of each result record once it is durable
        self._on_unrecorded = on_unrecorded  # told when the log refuses the result of a method that ran
        self.log = AssetLog(_log, settings.asset_uuid)
        self._transport = transport
        self._methods = methods
        self._context = context or nullcontext
        self.counters: Counter[str] = counters if counters is not None else Counter()
        # Answered correlation ids: the runtime's book, loaded from the log (durable), or a
        # bounded memory of this dispatcher's own answers when used alone.
        self.completed = completed if completed is not None else Deduper(settings.dedupe_size)
        self._offsets = OffsetTracker()
        self._running: dict[int, _Running] = {}
        self._deadlines: list[_Deadline] = []
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(settings.concurrency)
        self._executor = ThreadPoolExecutor(
            max_workers=settings.concurrency, thread_name_prefix="ofa-command"
        )
        self._stop = threading.Event()
        self._first_poll = threading.Event()
        self._drain_until = float("inf")
        self._thread: threading.Thread | None = None
        self._reader: CommandReader | None = None
        self._owns = False
        self.last_error: str | None = None
        self._undelivered = 0  # results published and not yet reported durable or failed
        self._unrecorded: dict[int, _Unrecorded] = {}  # by offset: results the log refused, retried
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
        with self._lock:
            idle = not any(not r.answered for r in self._running.values())
        # Idle: join the pool's threads now, so none outlives stop(). A method still
        # running past its timeout cannot be interrupted; its thread is left to finish.
        self._executor.shutdown(wait=idle, cancel_futures=True)

    # -- the loop ----------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if not self._eligible():
                self._first_poll.set()
                self._stop.wait(self.settings.poll_interval)
                continue
            try:
                self._reader = self._transport.command_reader(
                    self.settings.asset_uuid, self.settings.group
                )
                self._consume(self._reader)
                failures = 0
            except Exception as exc:  # keep the consumer alive whatever the backend does
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.counters["dispatch_errors"] += 1
                self._first_poll.set()
                self.reader_faults.failed(fault_key(self.last_error), "command reader failed; retrying: %s",
                                          self.last_error, exc_info=exc)
                self._close_reader()
                self._stop.wait(min(MAX_RETRY_DELAY, self.settings.retry_backoff * 2 ** min(failures, 6)))
        self._drain()

    def _consume(self, reader: CommandReader) -> None:
        generation = 0
        backlog: list[LogEntry] = []
        recovering = False
        while not self._stop.is_set():
            if not self._eligible():
                if reader.owns:
                    self.log.info("handing the command log over: this process is stopping")
                self._drain(time.monotonic() + self.settings.timeout)
                return
            self._retry_unrecorded()
            entries = reader.poll(0 if not self._first_poll.is_set() else self.settings.poll_interval)
            self.owns = reader.owns
            if self.reader_faults.failing:
                self.reader_faults.cleared()
                self.last_error = None
            self._first_poll.set()
            if reader.generation != generation:
                generation = reader.generation
                recovering, backlog = True, []
                self._offsets.clear()
                self.recoveries += 1
            if recovering:
                # Hold back only our commands (memory grows with unanswered commands, not
                # with the partition's traffic); results and everything else are handled
                # now: nothing runs for them, and results feed the look-ahead.
                for entry in entries:
                    if entry.key == self.settings.asset_uuid and entry.record is not None \
                            and is_command(entry.record):
                        self._offsets.add(entry.offset)  # nothing after it is committed before it runs
                        backlog.append(entry)
                    else:
                        self._handle(entry, redelivered=True)
                self.largest_backlog = max(self.largest_backlog, len(backlog))
                if not reader.caught_up():
                    continue
                if self._before_executing is not None:
                    self._before_executing()
                entries, backlog, recovering = backlog, [], False
                redelivered = True
            else:
                redelivered = False
            for entry in entries:
                if entry.record is not None and is_command(entry.record):
                    self._wait_for_room()
                if self._stop.is_set():
                    return  # not marked done: the next owner gets it
                self._handle(entry, redelivered=redelivered)
            self._expire_deadlines()
            self._commit(reader)

    def _wait_for_room(self) -> None:
        """Run no command while its result could not be recorded: the outgoing queue is
        known full, or the log refused an earlier result. A machine must not move when
        nobody can be told. The command waits in the log, not in memory."""
        if self._retry_unrecorded():
            self.counters["commands_held_unrecorded"] += 1
            self.log.warning("the log refuses results: commands wait until it takes the held ones")
            while self._retry_unrecorded() and not self._stop.is_set():
                self._expire_deadlines()
                self._stop.wait(0.2)
        if self._transport.saturated() is None:
            return
        self.counters["commands_held_queue_full"] += 1
        self.log.warning("the outgoing queue is full: commands wait until the broker takes records again")
        while self._transport.saturated() is not None and not self._stop.is_set():
            self._expire_deadlines()
            self._stop.wait(0.2)

    def _drain(self, until: float | None = None) -> None:
        """Let the commands in flight finish (bounded), commit, release the log."""
        deadline = min(self._drain_until if until is None else until, time.monotonic() + self.settings.timeout)
        while self._in_flight() and time.monotonic() < deadline:
            self._expire_deadlines()
            self._retry_unrecorded()
            if self._reader is not None:
                self._commit(self._reader)
            time.sleep(0.02)
        if self._reader is not None:
            self._commit(self._reader)
        self._close_reader()
        with self._lock:
            lost = [held.result for held in self._unrecorded.values()]
        for result in lost:  # its position stays uncommitted: the next owner handles it again
            self.log.error("%s %s: its %s answer was never recorded (the log refused it until this process "
                           "stopped), so the next executor of the log handles the command again",
                           result.method, result.correlation_id, result.status)

    def _in_flight(self) -> bool:
        """A command running, or a result not yet durable (held-back entries never started)."""
        with self._lock:
            return (self._undelivered > 0 or bool(self._unrecorded)
                    or any(not r.answered for r in self._running.values()))

    def _close_reader(self) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:
                self.log.exception("closing the command reader failed")
            self._reader = None
            self.owns = False

    def _commit(self, reader: CommandReader) -> None:
        offset = self._offsets.committable()
        if offset is not None:
            reader.commit(offset)

    # -- one entry ---------------------------------------------------------------

    def _handle(self, entry: LogEntry, *, redelivered: bool = False) -> None:
        """One log entry; ``redelivered``: part of the backlog read again after gaining ownership."""
        offset = entry.offset
        self._offsets.add(offset)
        record = entry.record
        if entry.key is not None and entry.key != self.settings.asset_uuid:
            self.counters["records_foreign"] += 1
            self._offsets.done(offset)
            return
        if record is None:
            self.counters["records_malformed"] += 1
            self.log.warning("skipped undecodable record at %s: %s", offset, entry.error)
            self._offsets.done(offset)
            return
        if is_result(record):
            cid = result_correlation_id(record)
            if cid:
                self.completed.add(cid)
            self._offsets.done(offset)
            return
        if not is_command(record):
            self._offsets.done(offset)
            return
        self.counters["commands_received"] += 1
        method_name = record.id[: -len(COMMAND_SUFFIX)]
        try:
            envelope = parse_envelope(record.value, self.settings.argument_limits)
        except EnvelopeError as exc:
            cid = exc.correlation_id
            if cid is not None and (self._is_running(cid) or cid in self.completed):
                self._refuse_silently(offset, method_name, cid, exc.code, exc.reason)
            else:
                self._reject(offset, method_name, cid, exc.sender_uuid, exc.code, exc.reason)
            return
        cid = envelope.correlation_id
        refusal = self._refusal(envelope, method_name)
        if refusal is not None:
            reason, text = refusal
            if self._is_running(cid) or cid in self.completed:  # this order: see _settle
                self._refuse_silently(offset, method_name, cid, reason, text)
            else:
                self._reject(offset, method_name, cid, envelope.sender_uuid, reason, text)
            return
        if (self.settings.signing_keys is not None and not redelivered
                and cid in self.completed and not self._is_running(cid)):
            # Signed: a new record with an answered id is a replay, not a redelivery.
            self._reject(offset, method_name, cid, envelope.sender_uuid, "replayed",
                         f"replayed: command {cid} was already answered")
            return
        if self._is_running(cid) or cid in self.completed:  # this order: see _settle
            self.counters["commands_duplicate"] += 1
            self.log.info("suppressed duplicate command %s (%s)", cid, method_name)
            self._offsets.done(offset)
            return
        spec = self._methods().get(method_name)
        if spec is None and not _routable(method_name):
            self.counters["records_unroutable"] += 1  # answering would write an unroutable ID
            self.completed.add(cid)  # refused: this id never runs later either
            self._offsets.done(offset)
            return
        if spec is None:
            self._reject(offset, method_name, cid, envelope.sender_uuid, "unknown_method",
                         f"unknown method {method_name!r}")
            return
        age = (datetime.now(UTC) - envelope.timestamp).total_seconds()
        if age > self.settings.max_age:
            self._reject(offset, method_name, cid, envelope.sender_uuid, "expired",
                         f"expired: the command is {age:.1f}s old, the limit is {self.settings.max_age:g}s")
            return
        if self.settings.signing_keys is not None and -age > self.settings.max_clock_skew:
            self._reject(offset, method_name, cid, envelope.sender_uuid, "from_the_future",
                         f"from_the_future: the command is dated {-age:.1f}s ahead, "
                         f"the tolerance is {self.settings.max_clock_skew:g}s")
            return
        try:
            kwargs = spec.convert_arguments(envelope.arguments)
        except ArgumentError as exc:
            self._reject(offset, method_name, cid, envelope.sender_uuid, "bad_arguments", str(exc))
            return
        self._execute(offset, spec, kwargs, cid, envelope.sender_uuid)

    def _refusal(self, envelope: Envelope, method: str) -> tuple[str, str] | None:
        """Signature, then sender: ``(reason, text)`` when the command must not run."""
        keys = self.settings.signing_keys
        if keys is not None:
            if not envelope.signature:  # null or ""
                return "unsigned", "unsigned: this asset executes only signed commands"
            if envelope.raw_timestamp is None:
                return "missing_timestamp", (
                    "missing_timestamp: a signed command needs header.timestamp as an ISO 8601 string")
            message = envelope_message(envelope, self.settings.asset_uuid, method)
            if not keys.verify(message, envelope.signature):
                return "bad_signature", (
                    "bad_signature: not signed with a shared secret for this asset and method")
        allowed = self.settings.allowed_senders
        if allowed is not None and envelope.sender_uuid not in allowed:
            return "sender_not_allowed", (
                f"sender_not_allowed: sender {envelope.sender_uuid!r} may not command this asset")
        return None

    def _refuse_silently(self, offset: int, method: str, cid: str, reason: str, text: str) -> None:
        """Counted, not answered: a _RESULT under a known id would pass for the genuine answer."""
        self.counters[f"rejected_{reason}"] += 1
        self.log.warning("refused command %s %s without answering (id already used): %s", method, cid, text)
        self._offsets.done(offset)

    def _is_running(self, cid: str) -> bool:
        with self._lock:
            return any(r.correlation_id == cid and not r.answered for r in self._running.values())

    def _reject(
        self, offset: int, method: str, cid: str | None, sender: str | None, reason: str, text: str
    ) -> None:
        self.counters[f"rejected_{reason}"] += 1
        if cid is None:
            self.counters["commands_unanswerable"] += 1
            self.log.warning("dropped command %s at %s with no usable correlation id: %s", method, offset, text)
            self._offsets.done(offset)
            return
        self.log.warning("rejected command %s %s: %s", method, cid, text)
        self._answer(offset, CommandResult(method, cid, sender, REJECTED, error=text))

    def _execute(
        self, offset: int, spec: MethodSpec, kwargs: dict[str, Any], cid: str, sender: str
    ) -> None:
        while not self._slots.acquire(timeout=self.settings.poll_interval):
            self._expire_deadlines()
            if self._stop.is_set():
                self._offsets.forget(offset)  # never started: the next owner runs it
                return
        # A command read while an earlier one ran: that one's result may since have been
        # refused (its slot is freed only after the attempt), and then nobody could be told.
        while self._retry_unrecorded():
            if self._stop.is_set():
                self._slots.release()
                self._offsets.forget(offset)
                return
            self._expire_deadlines()
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
        offered to the log, so a refusal (``_hold``) is known before it can start."""
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

    def _expire_deadlines(self) -> None:
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._deadlines or self._deadlines[0].at > now:
                    return
                item = heapq.heappop(self._deadlines)
                running = self._running.get(item.offset)
            if running is not None and not running.answered:
                self.counters["commands_timed_out"] += 1
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
        self.counters[f"commands_{result.status.lower()}"] += 1
        if result.correlation_id:  # answered, even REJECTED: that id never runs later
            self.completed.add(result.correlation_id)
        self._record(offset, result, result_record(self.settings.asset_uuid, result))

    def _record(self, offset: int, result: CommandResult, record: Record) -> None:
        """One attempt to write a result; one the log refuses is held and retried by ``_retry_unrecorded``."""

        def delivered(error: Exception | None) -> None:
            with self._lock:
                self._undelivered -= 1
                cleared = error is None and self._unrecorded.pop(offset, None) is not None \
                    and not self._unrecorded
            if cleared:
                self.log.info("the log takes results again: every held result is recorded")
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
            delay = self.settings.retry_backoff if held is None else min(held.delay * 2, MAX_RETRY_DELAY)
            self._unrecorded[offset] = _Unrecorded(result, record, reason, delay, now + delay)
        self.counters["result_delivery_failures"] += 1
        if not first:
            return
        self.counters["results_unrecorded"] += 1
        if result.status == REJECTED:  # it did not run: nothing to tell a caller but the refusal, later
            self.log.error("the log refused the rejection of %s %s (%s): it is written again until the log "
                           "takes it, and no further command runs meanwhile", result.method,
                           result.correlation_id, reason)
            return
        self.log.error("%s %s ran, but the log refused its result (%s): it is written again until the log "
                       "takes it, and no further command runs meanwhile", result.method,
                       result.correlation_id, reason)
        if self._on_unrecorded is not None:
            self._on_unrecorded(result, reason)

    def _retry_unrecorded(self) -> bool:
        """Write the held results whose time has come; True while any is held."""
        now = time.monotonic()
        with self._lock:
            due = [(offset, held) for offset, held in self._unrecorded.items()
                   if not held.sending and held.next_try <= now]
            for _, held in due:
                held.sending = True
        for offset, held in due:
            self._record(offset, held.result, held.record)
        with self._lock:
            return bool(self._unrecorded)

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
        with self._lock:
            return [(held.result, held.reason) for held in self._unrecorded.values()]
