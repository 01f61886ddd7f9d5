"""The call path: methods called through the asset's log, commands sent to other assets.

A mixin of ``AssetRuntime`` rather than an object of its own: every step reads
the runtime's live per-process state (its transport, its book of calls, its
counters, whether it started), which a separate object would only mirror.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..transports import Transport, TransportError
from ..transports.base import TransportBusy
from ..wire.commands import (
    ERROR,
    OK,
    CommandResult,
    command_record,
    is_result,
    json_safe,
    new_envelope,
    result_correlation_id,
    result_record,
)
from ..wire.protocol import Record, validate_identifier
from ..wire.signing import sign_envelope
from .calls import CallBook, CallEntry
from .counters import HTTP_CALLS, Counters
from .errors import CallPending, ResultNotRecorded
from .logs import AssetLog, log_method_error
from .registry import Declarations
from .remote import RemoteAsset
from .settings import RuntimeSettings


class CallPath:
    """``invoke``, ``call``, ``find_call``, ``send_command`` and the views of other assets."""

    if TYPE_CHECKING:  # provided by AssetRuntime
        settings: RuntimeSettings
        log: AssetLog
        calls: CallBook
        counters: Counters
        _declared: Declarations
        _started: bool

        @property
        def asset_uuid(self) -> str: ...

        @property
        def transport(self) -> Transport: ...

        def _check_process(self) -> None: ...

        def _publish(self, record: Record) -> None: ...

    def invoke(
        self, name: str, kwargs: Mapping[str, Any], *, sender_uuid: str, correlation_id: str | None = None
    ) -> CommandResult:
        """Run a method in the calling thread (HTTP) and publish its ``_RESULT``."""
        spec = self._declared.methods[name]
        cid = correlation_id or new_envelope(sender_uuid).correlation_id
        started = time.monotonic()
        try:
            value = spec.func(**kwargs)
        except Exception as exc:
            log_method_error(self.log, name, cid, exc)
            result = CommandResult(name, cid, sender_uuid, ERROR, error=f"{type(exc).__name__}: {exc}",
                                   duration_ms=(time.monotonic() - started) * 1000.0)
        else:
            result = CommandResult(name, cid, sender_uuid, OK, result=json_safe(value),
                                   duration_ms=(time.monotonic() - started) * 1000.0)
        self.counters.add_labelled(HTTP_CALLS, result.status.lower())
        self._publish(result_record(self.asset_uuid, result))
        return result

    def call(
        self,
        name: str,
        arguments: Mapping[str, Any],
        *,
        sender_uuid: str,
        correlation_id: str | None = None,
        wait: float | None = None,
    ) -> CommandResult:
        """Call one of this asset's methods through its log, as a command, and wait for the result.

        The elected executor runs it in the log's order, with every rule a
        command has (concurrency, expiry, signatures, senders, limits). The
        correlation id is an idempotency key: a call whose id the log already
        holds is never written again; its result (or the wait for it) is shared.
        Raises ``ResultNotRecorded`` when the method ran here and the log
        refused its result, ``CallPending`` when no result came within ``wait`` (the call
        stays in the log), ``CallConflict`` for an id used by another call.
        """
        self._check_process()
        if not self._started:
            raise TransportError(f"the OpenFactory runtime of {self.asset_uuid!r} is not started in this "
                                 f"process (pid {os.getpid()}): a call needs it to follow the log for the result")
        if name not in self._declared.methods:
            raise KeyError(f"method {name!r} is not declared on asset {self.asset_uuid!r}")
        envelope = new_envelope(sender_uuid, dict(arguments), correlation_id=correlation_id)
        cid = envelope.correlation_id
        known = self.calls.check_same_call(cid, name, envelope.arguments) if correlation_id else None
        if known is not None and known.result is not None:
            self.counters.add("http_replayed")
            return known.result
        if known is None:
            health = self.transport.health()
            if not health.ok:
                raise TransportError(f"the asset's log is unreachable ({health.detail}): the call was not "
                                     "written and did not run; retry when /ofa/ready answers 200")
            if self.settings.command_secret is not None:
                envelope = sign_envelope(envelope, self.asset_uuid, name, self.settings.command_secret)
            busy = self.transport.saturated()
            if busy is not None:
                raise busy  # refused before anything was written
            try:
                self._publish(command_record(self.asset_uuid, name, envelope))
            except TransportBusy:
                raise
            except TransportError as exc:
                raise TransportError(f"the call was not written to the asset's log and did not run: {exc}") from exc
        budget = self.settings.call_wait if wait is None else wait
        result = self.calls.wait(cid, budget)
        if result is None:
            entry = self.calls.get(cid)
            if entry is not None and entry.unrecorded is not None:
                self.counters.add("http_ran_unrecorded")
                raise ResultNotRecorded(cid, name, entry.unrecorded)
            self.counters.add("http_pending")
            raise CallPending(cid, budget)
        self.counters.add_labelled(HTTP_CALLS, str(result.status).lower())
        return result

    def find_call(self, correlation_id: str) -> CallEntry | None:
        """What the log holds of a call (within the max age): its method and result, if any.

        This process's book first; else the log itself (a process that
        started after the call, or the CLI).
        """
        self._check_process()
        entry = self.calls.get(correlation_id)
        if entry is not None and (entry.result is not None or self._started):
            return entry
        book = CallBook(self.calls.window, self.settings.dedupe_size)
        book.observe(self.transport.calls_since(self.asset_uuid, time.time() - self.calls.window))
        return book.get(correlation_id)

    def send_command(
        self,
        target_uuid: str,
        method: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        wait: float | None = None,
        sender_uuid: str | None = None,
    ) -> tuple[str, CommandResult | None]:
        """Write ``<method>_CMD`` on another asset, as any asset would.

        With ``wait``, follow the target's log for the matching ``_RESULT``
        (None if none came in time). Needs no started runtime (the CLI uses it).
        Signed when ``command_secret`` is configured.
        """
        validate_identifier("target asset UUID", target_uuid)
        validate_identifier("method name", method)
        envelope = new_envelope(sender_uuid or self.asset_uuid, dict(arguments or {}))
        if self.settings.command_secret is not None:
            envelope = sign_envelope(envelope, target_uuid, method, self.settings.command_secret)
        transport = self.transport
        follower = transport.follow(target_uuid) if wait else None
        try:
            transport.publish(command_record(target_uuid, method, envelope))
            if follower is None:
                return envelope.correlation_id, None
            transport.flush(wait or 0)
            deadline = time.monotonic() + (wait or 0)
            while (remaining := deadline - time.monotonic()) > 0:
                for record in follower.poll(min(remaining, 0.5)):
                    if is_result(record) and result_correlation_id(record) == envelope.correlation_id:
                        return envelope.correlation_id, CommandResult.from_record(record)
            return envelope.correlation_id, None
        finally:
            if follower is not None:
                follower.close()

    def asset(self, asset_uuid: str) -> RemoteAsset:
        """Another asset: its current state and methods, and ``.call(...)`` to command it."""
        return RemoteAsset(self, asset_uuid)

    def asset_by_uns(self, uns_id: str) -> RemoteAsset:
        """Another asset by its UNS id, resolved through ksqlDB (the reference's ``AssetUNS``)."""
        return RemoteAsset.by_uns(self, uns_id)
