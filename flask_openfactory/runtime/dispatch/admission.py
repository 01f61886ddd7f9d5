"""Admission: what the dispatcher does with one entry of the command log.

A pure function of the entry and the facts it needs (the settings, a clock,
the methods, the calls known to run or to be answered): no I/O, no counters,
no log lines, nothing changed. The dispatcher calls ``decide`` and acts on the
decision, so the rules read here as one table, in the order they are applied.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from ...transports.base import LogEntry
from ...wire.commands import (
    Envelope,
    EnvelopeError,
    is_command,
    is_result,
    parse_envelope,
    result_correlation_id,
)
from ...wire.methods import ArgumentError, MethodSpec
from ...wire.protocol import COMMAND_SUFFIX, validate_identifier
from ...wire.signing import envelope_message
from .settings import DispatchSettings

# -- decisions: every one leaves the position done, except Reject and Run ------------------
# ``command``: the decision is about a command of this asset (counted as received).


@dataclass(frozen=True, slots=True)
class Ignore:
    """Nothing to run or answer (another asset's record, or not a command)."""

    command: ClassVar[bool] = False
    skipped: str | None = None  # counted as a skipped record for this reason, if at all


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A value that could not be decoded: counted, logged, skipped."""

    command: ClassVar[bool] = False
    error: str | None


@dataclass(frozen=True, slots=True)
class ResultSeen:
    """A ``_RESULT`` record: its correlation id (if readable) is answered."""

    command: ClassVar[bool] = False
    correlation_id: str | None


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A command whose id runs or was answered: suppressed, not answered again."""

    command: ClassVar[bool] = True
    method: str
    correlation_id: str


@dataclass(frozen=True, slots=True)
class Unroutable:
    """A method name no result could be written under: counted, never answered, never run."""

    command: ClassVar[bool] = True
    method: str
    correlation_id: str


@dataclass(frozen=True, slots=True)
class RefuseSilently:
    """Must not run, and must not be answered: a ``_RESULT`` under a known id would pass
    for the genuine answer."""

    command: ClassVar[bool] = True
    method: str
    correlation_id: str
    reason: str
    text: str


@dataclass(frozen=True, slots=True)
class Reject:
    """Must not run: answered ``REJECTED`` (dropped when no correlation id was readable)."""

    command: ClassVar[bool] = True
    method: str
    correlation_id: str | None
    sender_uuid: str | None
    reason: str
    text: str


@dataclass(frozen=True, slots=True)
class Run:
    """Admitted: run the method with these arguments."""

    command: ClassVar[bool] = True
    spec: MethodSpec
    kwargs: dict[str, Any]
    correlation_id: str
    sender_uuid: str


Decision = Ignore | Undecodable | ResultSeen | Duplicate | Unroutable | RefuseSilently | Reject | Run

# The commonest decisions, made once: most entries of a shared partition are other records.
_FOREIGN = Ignore("foreign")
_NOT_A_COMMAND = Ignore()

# -- the rules -------------------------------------------------------------------------------


def decide(
    entry: LogEntry,
    settings: DispatchSettings,
    *,
    now: Callable[[], datetime],
    redelivered: bool,
    methods: Mapping[str, MethodSpec],
    running: Callable[[str], bool],
    answered: Container[str],
) -> Decision:
    """The decision for one log entry.

    ``now``: the clock, read once and only for a command that reaches the age check (as
    late as possible, and not at all for the other records of a shared partition);
    ``redelivered``: part of the backlog read again after gaining ownership;
    ``running``/``answered``: the calls in flight and those already answered.
    """

    record = entry.record
    if entry.key is not None and entry.key != settings.asset_uuid:
        return _FOREIGN
    if record is None:
        return Undecodable(entry.error)
    if is_result(record):
        return ResultSeen(result_correlation_id(record))
    if not is_command(record):
        return _NOT_A_COMMAND
    method = record.id[: -len(COMMAND_SUFFIX)]
    try:
        envelope = parse_envelope(record.value, settings.argument_limits)
    except EnvelopeError as exc:
        # known: running, or answered (this order: see CommandRunner._settle)
        if exc.correlation_id is not None and (running(exc.correlation_id) or exc.correlation_id in answered):
            return RefuseSilently(method, exc.correlation_id, exc.code, exc.reason)
        return Reject(method, exc.correlation_id, exc.sender_uuid, exc.code, exc.reason)
    cid, sender = envelope.correlation_id, envelope.sender_uuid
    refusal = _refusal(envelope, method, settings)
    if refusal is not None:
        if running(cid) or cid in answered:
            return RefuseSilently(method, cid, *refusal)
        return Reject(method, cid, sender, *refusal)
    if settings.signing_keys is not None and not redelivered and cid in answered and not running(cid):
        # Signed: a new record with an answered id is a replay, not a redelivery.
        return Reject(method, cid, sender, "replayed", f"replayed: command {cid} was already answered")
    if running(cid) or cid in answered:
        return Duplicate(method, cid)
    spec = methods.get(method)
    if spec is None and not _routable(method):
        return Unroutable(method, cid)  # answering would write an unroutable ID
    if spec is None:
        return Reject(method, cid, sender, "unknown_method", f"unknown method {method!r}")
    age = (now() - envelope.timestamp).total_seconds()
    if age > settings.max_age:
        return Reject(method, cid, sender, "expired",
                      f"expired: the command is {age:.1f}s old, the limit is {settings.max_age:g}s")
    if settings.signing_keys is not None and -age > settings.max_clock_skew:
        return Reject(method, cid, sender, "from_the_future",
                      f"from_the_future: the command is dated {-age:.1f}s ahead, "
                      f"the tolerance is {settings.max_clock_skew:g}s")
    try:
        kwargs = spec.convert_arguments(envelope.arguments)
    except ArgumentError as exc:
        return Reject(method, cid, sender, "bad_arguments", str(exc))
    return Run(spec, kwargs, cid, sender)


def _refusal(envelope: Envelope, method: str, settings: DispatchSettings) -> tuple[str, str] | None:
    """Signature, then sender: ``(reason, text)`` when the command must not run."""
    keys = settings.signing_keys
    if keys is not None:
        if not envelope.signature:  # null or ""
            return "unsigned", "unsigned: this asset executes only signed commands"
        if envelope.raw_timestamp is None:
            return "missing_timestamp", (
                "missing_timestamp: a signed command needs header.timestamp as an ISO 8601 string")
        message = envelope_message(envelope, settings.asset_uuid, method)
        if not keys.verify(message, envelope.signature):
            return "bad_signature", (
                "bad_signature: not signed with a shared secret for this asset and method")
    allowed = settings.allowed_senders
    if allowed is not None and envelope.sender_uuid not in allowed:
        return "sender_not_allowed", (
            f"sender_not_allowed: sender {envelope.sender_uuid!r} may not command this asset")
    return None


def _routable(name: str) -> bool:
    try:
        validate_identifier("method name", name)
    except ValueError:
        return False
    return True
