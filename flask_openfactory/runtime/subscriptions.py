"""Live subscriptions to other assets' attributes.

A subscription reads the watched asset's log through the transport's
``watch_reader``: only the partition that holds the asset's key, from a
position committed under a group of its own, so that every update reaches
the handler at least once, in log order, even across a takeover. By default
it runs in the one process that executes commands (a handler that acts must
act once); ``every_worker=True`` runs it in each process instead, from now
on and without commits, which is what a per-worker cache needs.

Each start delivers the asset's current state first (from ksqlDB on Kafka
when configured), then what changed. A handler that raises is retried a few
times, then the update is skipped and counted, so one bad update cannot stall
the subscription.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..transports.base import CommandReader, LogEntry, Transport
from ..wire.commands import is_command, is_result
from ..wire.protocol import CONDITION, EVENTS, METHOD, SAMPLES, UNAVAILABLE, Record, validate_identifier
from .backoff import Backoff
from .counters import Counters
from .logs import AssetLog
from .owned_reading import read_as_owner, retry_until_stopped

_log = logging.getLogger("flask_openfactory.subscriptions")

F = TypeVar("F", bound=Callable[..., Any])
ContextFactory = Callable[[], AbstractContextManager[Any]]

ATTRIBUTE_TYPES = (SAMPLES, EVENTS, CONDITION)
HANDLER_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """A declared subscription: what ``@subscribe`` records.

    ``asset`` is the watched UUID, or a function called in the app context at
    start (``lambda: current_app.config["MACHINE_UUID"]``) so that the UUID
    can come from config.
    """

    name: str
    handler: Callable[[Record], Any]
    asset: str | Callable[[], str]
    attribute: str | None = None
    type: str | None = None
    every_worker: bool = False

    def resolve_asset(self) -> str:
        uuid = self.asset() if callable(self.asset) else self.asset
        return validate_identifier(f"asset UUID of subscription {self.name!r}", uuid)

    def matches(self, record: Record) -> bool:
        """Attribute updates only: commands, results and method advertisements are not."""
        if record.type == METHOD or is_command(record) or is_result(record):
            return False
        if self.attribute is not None and record.id != self.attribute:
            return False
        return self.type is None or record.type == self.type


def subscribe(
    asset: str | Callable[[], str],
    *,
    attribute: str | None = None,
    type: str | None = None,
    every_worker: bool = False,
    name: str | None = None,
) -> Callable[[F], F]:
    """Validate and record a subscription on ``handler(record)`` (``AssetBlueprint.subscribe`` declares it).

    Watch all of ``asset``'s attributes, one ``attribute`` ID, or those of one
    ``type`` (Samples, Events, Condition).
    """
    if not callable(asset):
        validate_identifier("watched asset UUID", asset)
    if attribute is not None:
        validate_identifier("watched attribute ID", attribute)
    if type is not None and type not in ATTRIBUTE_TYPES:
        raise ValueError(f"subscription type must be one of {', '.join(ATTRIBUTE_TYPES)}, got {type!r}")

    def decorate(handler: F) -> F:
        if not callable(handler):
            raise TypeError(f"@subscribe decorates a function, got {handler!r}")
        try:
            sub_name = validate_identifier("subscription name", name or handler.__name__)
        except ValueError as exc:
            raise ValueError(f"{exc}; name it with @subscribe(..., name='...')") from None
        handler.__ofa_subscription__ = SubscriptionSpec(  # type: ignore[attr-defined]  # a marker on the function
            sub_name, handler, asset, attribute, type, every_worker)
        return handler

    return decorate


def subscription_of(handler: Callable[..., Any]) -> SubscriptionSpec:
    spec = getattr(handler, "__ofa_subscription__", None)
    if not isinstance(spec, SubscriptionSpec):
        raise TypeError(f"{handler!r} is not decorated with @subscribe(...)")
    return spec


class SubscriptionRunner:
    """One subscription in this process: a thread that reads, delivers and commits."""

    POLL = 0.2

    def __init__(
        self,
        spec: SubscriptionSpec,
        asset_uuid: str,
        *,
        transport: Transport,
        group: str,
        context: ContextFactory | None,
        log: AssetLog,
        counters: Counters,
    ) -> None:
        self.spec = spec
        self.asset_uuid = asset_uuid
        self.group = f"{group}-watch-{spec.name}"
        self._transport = transport
        self._context = context or nullcontext
        self._log = log
        self._counters = counters
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ofa-watch-{spec.name}", daemon=True)
        self._delivered: dict[str, str] = {}  # attribute ID -> timestamp of the last update delivered
        self._progress = threading.Condition()
        self._idle_polls = 0  # polls that found nothing new, for ``settled``
        self.delivered = 0

    def start(self) -> None:
        self._thread.start()

    def request_stop(self, grace: float = 0.0) -> None:
        self._stop.set()

    def join(self, timeout: float) -> bool:
        self._thread.join(max(0.0, timeout))
        return not self._thread.is_alive()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        """Told to stop: what it read from now on is left uncommitted for the next process."""
        return self._stop.is_set()

    def maintain(self) -> None:
        """Nothing to do between updates (the supervisor calls every runner)."""

    def settled(self, timeout: float) -> bool:
        """True once a whole poll that began after this call found nothing new (tests)."""
        deadline = time.monotonic() + timeout
        with self._progress:
            target = self._idle_polls + 2
            while self._idle_polls < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.alive:
                    return False
                self._progress.wait(remaining)
        return True

    # -- the loop ----------------------------------------------------------------------

    def _run(self) -> None:
        backoff = Backoff(0.5, 30.0)
        if self.spec.every_worker:
            retry_until_stopped(self._follow, stop=self._stop, backoff=backoff, failed=self._failed)
        else:
            owned = _WatchedLog(
                lambda: self._transport.watch_reader(self.asset_uuid, self.group), asset_uuid=self.asset_uuid,
                matches=self.spec.matches, poll_timeout=self.POLL, current_state=self._current_state,
                deliver_all=self._deliver_all, polled=self._polled, failed=self._failed)
            read_as_owner(owned, stop=self._stop, backoff=backoff, idle_wait=self.POLL)

    def _failed(self, error: Exception) -> None:
        self._counters.add("subscription_errors")
        self._log.error("subscription %s to %s failed; retrying", self.spec.name, self.asset_uuid, exc_info=error)

    def _follow(self) -> None:
        """Every-worker mode: the current state, then updates from now on."""
        follower = self._transport.follow(self.asset_uuid)
        try:
            self._deliver_all(self._current_state(), only_newer=True)
            while not self._stop.is_set():
                records = [r for r in follower.poll(self.POLL) if self.spec.matches(r)]
                # Skip only what is older than a value delivered already (the state, replayed):
                # updates written within one millisecond share their timestamp and all count.
                self._deliver_all([r for r in records if r.timestamp >= self._delivered.get(r.id, "")])
                self._polled(bool(records))
        finally:
            follower.close()

    def _current_state(self) -> list[Record]:
        snapshot = self._transport.snapshot(self.asset_uuid)
        return sorted((r for r in snapshot.values() if self.spec.matches(r)), key=lambda r: r.timestamp)

    def _polled(self, found: bool) -> None:
        if not found:
            with self._progress:
                self._idle_polls += 1
                self._progress.notify_all()

    def _deliver_all(self, records: Iterable[Record], *, only_newer: bool = False) -> bool:
        """False when a stop cut the delivery short (what was read must then not be committed)."""
        for record in records:
            if self._stop.is_set():
                return False
            seen = self._delivered.get(record.id)
            if only_newer and seen is not None and record.timestamp <= seen:
                continue  # the log delivered this value (or a newer one) already
            self._deliver(record)
        return not self._stop.is_set()  # a handler interrupted by the stop may have been skipped

    def _deliver(self, record: Record) -> None:
        for attempt in range(1, HANDLER_ATTEMPTS + 1):
            try:
                with self._context():
                    self.spec.handler(record)
                break
            except Exception as exc:
                self._counters.add("subscription_handler_errors")
                if attempt == HANDLER_ATTEMPTS or self._stop.is_set():
                    self._counters.add("subscription_updates_skipped")
                    self._log.error("subscription %s: handler raised %s on %s=%r %d times; update skipped",
                                    self.spec.name, type(exc).__name__, record.id, record.value, attempt,
                                    exc_info=exc)
                    break
                self._stop.wait(0.1 * attempt)
        if record.timestamp != UNAVAILABLE:  # no time to compare later updates with
            self._delivered[record.id] = record.timestamp
        self.delivered += 1
        self._counters.add("subscription_updates")


class _Deliver(Protocol):
    def __call__(self, records: Iterable[Record], *, only_newer: bool = False) -> bool: ...


class _WatchedLog:
    """Owner mode's part of ``read_as_owner``: a committed position, the current state on each gain
    of ownership, updates delivered in log order and committed once delivered. The runner hands
    it what it needs (opening a reader, delivering, noting a poll or a failure)."""

    def __init__(
        self,
        open_reader: Callable[[], CommandReader],
        *,
        asset_uuid: str,
        matches: Callable[[Record], bool],
        poll_timeout: float,
        current_state: Callable[[], list[Record]],
        deliver_all: _Deliver,
        polled: Callable[[bool], None],
        failed: Callable[[Exception], None],
    ) -> None:
        self._open = open_reader
        self._asset_uuid = asset_uuid
        self._matches = matches
        self._poll_timeout = poll_timeout
        self._current_state = current_state
        self._deliver_all = deliver_all
        self._note_poll = polled
        self._note_failure = failed
        self._reader: CommandReader | None = None
        self._backlog: list[Record] = []
        self._state: list[Record] | None = None  # the current state, read once per gain of ownership
        self._last_offset: int | None = None
        self._found = False

    def open_reader(self) -> CommandReader:
        self._reader = self._open()
        return self._reader

    def poll_timeout(self) -> float:
        return self._poll_timeout

    def keep_reading(self, reader: CommandReader) -> bool:
        return True

    def polled(self, reader: CommandReader, entries: list[LogEntry]) -> None:
        self._found = bool(entries)
        if entries:
            self._last_offset = entries[-1].offset

    def _matching(self, entries: list[LogEntry]) -> list[Record]:
        uuid, matches = self._asset_uuid, self._matches
        return [e.record for e in entries if e.key == uuid and e.record is not None and matches(e.record)]

    def took_over(self) -> None:
        self._backlog, self._state = [], None

    def hold(self, entries: list[LogEntry]) -> None:
        self._backlog.extend(self._matching(entries))
        if self._state is None:
            # Read before catching up, so that everything in it precedes the point where live
            # delivery starts: a value read later could overtake the updates before it.
            self._state = self._current_state()

    def release(self) -> bool:
        backlog, state = self._backlog, self._state or []
        self._backlog, self._state = [], None
        return self._deliver_all(backlog) and self._deliver_all(state, only_newer=True)

    def handle(self, entries: list[LogEntry]) -> bool:
        return self._deliver_all(self._matching(entries))

    def commit(self, reader: CommandReader) -> None:
        if self._last_offset is not None:
            reader.commit(self._last_offset)
            self._last_offset = None
        self._note_poll(self._found)

    def finished(self, reader: CommandReader) -> None:
        self._close()

    def failed(self, error: Exception) -> None:
        self._close()
        self._note_failure(error)

    def _close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
