"""This process's current records of the asset, kept up with the asset's log.

A follower thread applies what any process wrote (and the echoes of our own
writes) to the cache of current values and to the book of calls; ``sync``
makes a read wait until the cache holds what the log held when the read began.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..transports import Transport
from ..transports.base import Follower
from ..transports.quiet import Repeats, fault_key
from ..wire.commands import CommandResult, is_result
from ..wire.protocol import UNAVAILABLE, Record
from .calls import CallBook
from .counters import Counters
from .errors import StaleRead
from .freshness import AppliedPosition, SharedLookup
from .logs import AssetLog
from .method_results import MethodResults
from .registry import Declarations

_log = logging.getLogger("flask_openfactory.runtime")


@dataclass(frozen=True, slots=True)
class FollowerState:
    """The follower of one process at one moment (``AssetRuntime.follower_state``)."""

    alive: bool  # its thread runs: this process's state and calls' results keep up with the log
    applied: int  # the log position it has applied up to; -1 before it applied anything


class FollowedState:
    """The cache of current values of one asset in one process, and the thread feeding it."""

    def __init__(
        self,
        declared: Declarations,
        *,
        lock: threading.RLock,
        stopping: threading.Event,
        calls: CallBook,
        method_results: MethodResults,
        counters: Counters,
        log: AssetLog,
        on_poll: Callable[[], object],
    ) -> None:
        self.records: dict[str, Record] = {}  # declared IDs only (``Declarations.cacheable``)
        self.applied = AppliedPosition()  # how far the follower has applied the log
        self._declared = declared
        self._asset_uuid = declared.asset_uuid
        self._lock = lock  # the runtime's: a read waits for a start in progress
        self._stopping = stopping
        self._calls = calls
        self._method_results = method_results
        self._counters = counters
        self._log = log
        self._on_poll = on_poll
        self._follower: Follower | None = None
        self._end_lookup: SharedLookup | None = None
        self._thread: threading.Thread | None = None

    def load(self, snapshot: Mapping[str, Record]) -> None:
        """Take the log's current state as the starting point (under the runtime's lock)."""
        cacheable = self._declared.cacheable
        self.records.update((rid, r) for rid, r in snapshot.items() if cacheable(r))

    def open(self, transport: Transport) -> None:
        """Follow from the log's end as it is now: before the snapshot is read and the calls are
        read back, so that what another process writes meanwhile is in one or the other."""
        self._follower = transport.follow(self._asset_uuid, skip_own_writes=True)
        self.applied.reset()

    def start(self, transport: Transport) -> None:
        """Read back the window of calls (the follower is open already), then apply the log."""
        self._end_lookup = SharedLookup(lambda: transport.end_position(self._asset_uuid))
        self._calls.observe(transport.calls_since(self._asset_uuid, time.time() - self._calls.window))
        self._thread = threading.Thread(target=self._follow, args=(transport,), name="ofa-follow", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the thread to end (the runtime set its stop event first); a follower opened
        by a start that failed before the thread began is closed here."""
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        elif self._follower is not None:
            _close_quietly(self._follower)
            self._follower = None

    def state(self) -> FollowerState:
        thread = self._thread
        return FollowerState(alive=thread is not None and thread.is_alive(), applied=self.applied.value)

    def copy(self) -> dict[str, Record]:
        with self._lock:
            return dict(self.records)

    def _follow(self, transport: Transport) -> None:
        """Apply records written by other processes (and echoes of our own)."""
        follower = self._follower
        resume: Follower | None = None  # a reopened follower goes on where the failed one stopped
        faults = Repeats(self._log, "following the asset's log")
        while not self._stopping.is_set():
            try:
                if follower is None:
                    follower = self._follower = transport.follow(self._asset_uuid, skip_own_writes=True,
                                                                 resume=resume)
                records = follower.poll(0.2)
                faults.cleared()
                if records:
                    self.apply(records)
                self.applied.moved_to(follower.position)
                self._on_poll()  # stamps an ownership change within one poll
            except Exception as exc:  # the shared state depends on this thread: reopen, never die
                self._counters.add("follow_errors")
                faults.failed(fault_key(f"{type(exc).__name__}: {exc}"), "following the asset's log failed; "
                              "reopening: %s: %s", type(exc).__name__, exc, exc_info=exc)
                if follower is not None:
                    resume = follower
                    _close_quietly(follower)
                    follower = self._follower = None
                self._stopping.wait(1.0)
        if follower is not None:
            _close_quietly(follower)

    def sync(self, transport: Transport, budget: float) -> None:
        """Wait until this process has applied every record the log held when called (see
        ``AssetRuntime.sync``); raises ``StaleRead`` when that cannot be done within ``budget``."""
        deadline = time.monotonic() + budget
        lookup, follower = self._end_lookup, self._follower
        if lookup is None:
            return
        health = transport.health()
        if not health.ok:  # fail fast: the end cannot be read while the log is away
            raise StaleRead(f"the log of {self._asset_uuid!r} is unreachable ({health.detail}): the latest "
                            "state cannot be confirmed, so none is given; try again when /ofa/ready answers 200")
        try:
            end = lookup(budget)
        except TimeoutError:
            raise StaleRead(f"the end of the log of {self._asset_uuid!r} could not be read within {budget:g}s; "
                            "try again when the log answers") from None
        if follower is not None:
            follower.wake()
        if not self.applied.wait_for(end, max(0.0, deadline - time.monotonic())):
            raise StaleRead(
                f"this process (pid {os.getpid()}) has not read the log of {self._asset_uuid!r} up to where it "
                f"ended when the read began (position {end}, applied {self.applied.value}) within {budget:g}s; "
                "the answer could be stale, so none is given: try again")

    def apply(self, records: Iterable[Record]) -> None:
        records = list(records)
        for record in records:
            if is_result(record):
                self._observe_result(record)
        self._calls.observe(records)
        cacheable, cache = self._declared.cacheable, self.records
        with self._lock:
            for record in records:
                if not cacheable(record):
                    continue
                current = cache.get(record.id)
                if current is None or not _older(record, current):
                    cache[record.id] = record

    def _observe_result(self, record: Record) -> None:
        try:
            result = CommandResult.from_record(record)
        except Exception:  # anyone may write to the log: a bad result must not stop following
            return
        self._method_results.observe(result.method, str(result.status), result.duration_ms,
                                     self._declared.methods)


def _close_quietly(follower: Any) -> None:
    try:
        follower.close()
    except Exception:
        _log.exception("closing a follower failed")


def _older(record: Record, current: Record) -> bool:
    """A replayed record must not undo a newer value (timestamps are fixed-width)."""
    if record.timestamp == UNAVAILABLE or current.timestamp == UNAVAILABLE:
        return False
    return record.timestamp < current.timestamp
