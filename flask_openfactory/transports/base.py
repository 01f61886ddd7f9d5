"""What the runtime needs from a transport, and nothing more.

A transport is an append-only log of records keyed by asset UUID plus the
current state per asset. The runtime builds on four operations: publish a
record, read an asset's current state, follow an asset's new records (every
process, for shared state and results), and read the asset's commands from a
committed position while this process is the asset's one executor.

Transports are created per process, lazily, by the runtime; nothing here may
be created before a fork and used after it.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..wire.protocol import COMMAND_SUFFIX, METHOD, RESULT_SUFFIX, Record, RecordError
from .errors import ConfigurationError as ConfigurationError  # re-exported: imported from here today
from .errors import TransportBusy as TransportBusy
from .errors import TransportError as TransportError
from .locks import Membership, membership_base

DeliveryCallback = Callable[[Exception | None], None]

# Clients inherited through fork, or dropped after a fatal error: kept referenced
# so that they are never destroyed (destroying an inherited librdkafka handle hangs).
KEEP_ALIVE: list[Any] = []


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One position of an asset's log as the command reader sees it.

    ``record`` is None when the stored value could not be decoded; ``error``
    then says why. Entries of other assets sharing the log (Kafka partitions)
    are returned too, so that the committed position can move past them.
    """

    offset: int
    key: str | None
    record: Record | None
    error: str | None = None


def decode_entry(offset: int, key: str | None, value: bytes | str | None) -> LogEntry:
    """A stored (key, value) as a LogEntry: undecodable values carry the reason."""
    try:
        return LogEntry(offset, key, Record.from_wire(key, value))
    except RecordError as exc:
        return LogEntry(offset, key, None, str(exc))


def is_call_id(rid: str) -> bool:
    """A command's or a result's ID: what ``calls_since`` returns."""
    return rid.endswith((COMMAND_SUFFIX, RESULT_SUFFIX))


def decode_calls(rows: Iterable[tuple[Any, str | None, bytes | str | None]]) -> list[Record]:
    """The decodable commands and results among stored (offset, key, value) rows."""
    found = []
    for _, key, value in rows:
        try:
            record = Record.from_wire(key, value)
        except RecordError:
            continue
        if is_call_id(record.id):
            found.append(record)
    return found


@dataclass(slots=True)
class Health:
    ok: bool
    detail: str
    since: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "detail": self.detail,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since)),
        }


class HealthTracker:
    """Keeps ``since`` stable while the state does not change (for /ofa/ready)."""

    def __init__(self, detail: str = "not checked yet") -> None:
        self._health = Health(False, detail)
        self._lock = threading.Lock()

    def set(self, ok: bool, detail: str) -> None:
        with self._lock:
            if ok != self._health.ok:
                self._health = Health(ok, detail)
            else:
                self._health.detail = detail

    def get(self) -> Health:
        with self._lock:
            return Health(self._health.ok, self._health.detail, self._health.since)


class Follower(ABC):
    """New records of one asset, in log order, from the moment it was opened."""

    @abstractmethod
    def poll(self, timeout: float) -> list[Record]:
        """Wait up to ``timeout`` seconds for records; may return an empty list."""

    @property
    @abstractmethod
    def position(self) -> int:
        """How far the log has been read: comparable with ``Transport.end_position``.

        Every entry before it (of any key) has been returned by ``poll`` or
        skipped; reads that must follow writes wait until it reaches the end.
        """

    def wake(self) -> None:  # noqa: B027 (an optional hook: does nothing by default)
        """Make a waiting ``poll`` look at the log now (a reader waits for it)."""

    @abstractmethod
    def close(self) -> None: ...


class CommandReader(ABC):
    """The asset's log from the committed position, for the one executing process.

    Among all readers of one (asset, group) across processes, at most one owns
    the log at a time; ``poll`` returns nothing while this one does not.
    ``generation`` increases each time this reader gains ownership, so that the
    runtime can recover (suppress duplicates) before executing replayed commands.
    On the first ownership of a group with no committed position, the reader
    starts at the current end of the log and commits that position at once.
    """

    @property
    @abstractmethod
    def owns(self) -> bool: ...

    @property
    @abstractmethod
    def generation(self) -> int: ...

    @abstractmethod
    def poll(self, timeout: float) -> list[LogEntry]: ...

    @property
    def position(self) -> int | None:
        """The next offset this reader will read (for status and metrics)."""
        value = getattr(self, "_position", None)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def stats(self) -> dict[str, Any]:
        """This reader's own figures, a copy (``DispatcherState.reader_stats``); none by default."""
        return {}

    @abstractmethod
    def caught_up(self) -> bool:
        """True once every entry written before this call has been returned, or, when a call
        found the reader behind, every entry before the end that call saw: the end it keeps
        as its goal until reached, so that a log written faster than it is read cannot keep
        its owner from ever catching up (and starting to execute)."""

    _catch_up_to: int | None = None  # the goal of caught_up(); cleared on each gain of ownership

    def _reached(self, position: int, end: Callable[[], int | None]) -> bool:
        """``caught_up``'s rule, given where this reader is and how to look up the end now
        (None: behind, no need to ask), in the thread that reads or under the lock that guards the position."""
        goal = self._catch_up_to
        if goal is None:
            goal = end()
            if goal is None:
                return False
        if position < goal:
            self._catch_up_to = goal
            return False
        self._catch_up_to = None
        return True

    @abstractmethod
    def commit(self, offset: int) -> None:
        """Every entry up to and including ``offset`` is done."""

    @abstractmethod
    def close(self) -> None:
        """Commit what is committed, give up ownership, release resources."""


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """Settings every transport may read; each ignores what does not apply to it."""

    publish_timeout: float = 5.0  # bounded wait when the outgoing queue is full
    max_pending: int = 100_000  # outgoing records held while the backend is away
    max_pending_bytes: int = 64 * 1024 * 1024  # and their bytes (Kafka: queue.buffering.max.kbytes)
    kafka_config: dict[str, Any] = field(default_factory=dict, repr=False)  # librdkafka pass-through: SASL secrets
    ksqldb_url: str | None = None
    topic: str | None = None  # explicit assets topic, overrides discovery
    lookback: int = 5_000  # records read back for a snapshot when no ksqlDB answers
    election: str = "lock"  # Kafka: "lock" (one host, instant takeover) or "group" (several hosts)
    lock_dir: str | None = None  # where executor lock files live (default: the temp directory)


class Transport(ABC):
    scheme: str = ""

    def __init__(self, url: str, options: TransportOptions | None = None) -> None:
        self.url = url
        self.options = options or TransportOptions()
        # Told about records that fail after ``publish`` returned (asynchronous transports).
        self.on_failure: Callable[[Exception], None] | None = None

    @property
    def display_url(self) -> str:
        """The URL with any secret masked, safe for logs, CLI and HTTP."""
        return self.url

    @abstractmethod
    def publish(self, record: Record, on_delivery: DeliveryCallback | None = None) -> None:
        """Queue a record for the log; ``on_delivery`` fires once it is durable or failed.

        Raises TransportBusy after a bounded wait when the local queue is full.
        """

    def saturated(self) -> TransportBusy | None:
        """The error a write would fail with at once (the outgoing queue is known full), else None.

        Lets a caller refuse work whose records could not be queued (an HTTP
        method call) before doing it, rather than after.
        """
        return None

    @abstractmethod
    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` for queued records; return how many are still pending."""

    @abstractmethod
    def snapshot(self, asset_uuid: str) -> dict[str, Record]:
        """The asset's current attributes (last record per ID)."""

    def methods(self, asset_uuid: str) -> dict[str, Any]:
        """The asset's method advertisements (VALUE as stored), by method name."""
        return {rid: r.value for rid, r in self.snapshot(asset_uuid).items() if r.type == METHOD}

    @abstractmethod
    def follow(
        self, asset_uuid: str, *, skip_own_writes: bool = False, resume: Follower | None = None
    ) -> Follower:
        """New records of the asset from now on, or from where ``resume`` stopped.

        ``skip_own_writes`` is a hint: a transport may then leave out records
        this instance wrote (the runtime applied them already), to save decoding.
        ``resume`` is an earlier follower of the asset on this transport (closed
        after a fault): the new one goes on where it stopped, so nothing written
        while following was down is missed. A log that no longer holds what it
        had read (a sqlite log put back from an older copy, a recreated topic) is
        followed from the last record written before, or from its beginning, and
        the transport says so in its log.
        """

    @abstractmethod
    def command_reader(self, asset_uuid: str, group: str) -> CommandReader: ...

    def mark_start(self, asset_uuid: str, group: str) -> None:  # noqa: B027 (an optional hook: does nothing by default)
        """Give a group that never committed its first position: the log's end, now.

        Called at start, before the process serves anything: a call written
        after it is never skipped by a first executor that starts "at the end".
        """

    @abstractmethod
    def end_position(self, asset_uuid: str) -> int:
        """Where the asset's log ends now, as a ``Follower.position`` to wait for.

        Asked at the start of a read that must see every acknowledged write.
        """

    @abstractmethod
    def calls_since(self, asset_uuid: str, since: float) -> list[Record]:
        """The asset's commands and results written since ``since`` (epoch seconds), in log order.

        The log is the memory of what was answered: a process that takes the
        executor role, or a restarted one, learns every recent answer from here.
        Bounded by the time window, never the whole log.
        """

    def membership(self, asset_uuid: str) -> Membership:
        """This host's processes serving the asset through this log (one start, one stop)."""
        return Membership(membership_base(self.options.lock_dir, self.scheme, self.url,
                                          str(self.options.topic), asset_uuid))

    def watch_reader(self, asset_uuid: str, group: str) -> CommandReader:
        """Another asset's log for a subscription: the command reader's election and
        commits, but attribute writes are returned too (a command reader may skip them)."""
        return self.command_reader(asset_uuid, group)

    @abstractmethod
    def check(self, timeout: float) -> Health:
        """Actively ask the backend whether it answers (CLI, start-up)."""

    @abstractmethod
    def health(self) -> Health:
        """The last known state, cheap enough for every /ofa/ready request."""

    def stats(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def close(self, timeout: float = 5.0) -> None: ...
