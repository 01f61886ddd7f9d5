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
from typing import Any, TypeVar

from ..transports.base import CommandReader, Transport
from ..wire.commands import is_command, is_result
from ..wire.protocol import CONDITION, EVENTS, METHOD, SAMPLES, UNAVAILABLE, Record, validate_identifier
from .backoff import Backoff
from .counters import Counters
from .logs import AssetLog

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
        while not self._stop.is_set():
            try:
                if self.spec.every_worker:
                    self._follow()
                else:
                    self._consume()
                backoff.succeeded()
            except Exception:  # whatever the backend does, the subscription lives on
                self._counters.add("subscription_errors")
                self._log.exception("subscription %s to %s failed; retrying", self.spec.name, self.asset_uuid)
                self._stop.wait(backoff.failed())

    def _consume(self) -> None:
        """Owner mode: committed position, current state on each gain of ownership."""
        reader: CommandReader = self._transport.watch_reader(self.asset_uuid, self.group)
        try:
            generation = 0
            backlog: list[Record] = []
            state: list[Record] | None = None  # the current state, read once per gain of ownership
            last_offset: int | None = None
            while not self._stop.is_set():
                entries = reader.poll(self.POLL)
                recovering = reader.generation != generation
                records = [e.record for e in entries
                           if e.key == self.asset_uuid and e.record is not None and self.spec.matches(e.record)]
                if entries:
                    last_offset = entries[-1].offset
                if recovering:  # read up to the end before delivering, then add the current state
                    backlog.extend(records)
                    if state is None:
                        # Read before catching up, so that everything in it precedes the point where
                        # live delivery starts: a value read later could overtake the updates before it.
                        state = self._current_state()
                    if not reader.caught_up():
                        continue
                    generation, records, backlog = reader.generation, backlog, []
                    complete = self._deliver_all(records) and self._deliver_all(state, only_newer=True)
                    state = None
                else:
                    complete = self._deliver_all(records)
                if last_offset is not None and complete:  # stopped half-way: the next owner delivers the rest
                    reader.commit(last_offset)
                    last_offset = None
                self._polled(bool(entries))
        finally:
            reader.close()

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
