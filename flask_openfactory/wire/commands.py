"""Command envelopes and results: how one asset calls another's method (pure).

A caller writes ``<method>_CMD`` on the target asset; the target answers with
``<method>_RESULT`` on its own asset. The envelope rules are the platform's;
the result channel is ours and backward compatible (an extra attribute).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from .protocol import (
    COMMAND_SUFFIX,
    OPENFACTORY,
    RESULT_SUFFIX,
    Record,
    format_timestamp,
    parse_timestamp,
)

Status = Literal["OK", "ERROR", "REJECTED", "SENT_NO_RESULT"]
OK: Status = "OK"
ERROR: Status = "ERROR"
REJECTED: Status = "REJECTED"
# Never on the wire: a caller's verdict when the target (a reference app) writes no results.
NO_RESULT: Status = "SENT_NO_RESULT"

COMMAND_TAG = "Method.Command"
RESULT_TAG = "Method.Result"

_HEADER_FIELDS = {"correlation_id", "sender_uuid", "timestamp", "signature"}
_ENVELOPE_FIELDS = {"header", "arguments"}

DEFAULT_MAX_ARGUMENTS = 64
DEFAULT_MAX_COMMAND_BYTES = 64 * 1024
INVALID_ENVELOPE = "invalid_envelope"
TOO_MANY_ARGUMENTS = "too_many_arguments"
ARGUMENTS_TOO_LARGE = "arguments_too_large"


@dataclass(frozen=True, slots=True)
class ArgumentLimits:
    """Bounds on one call's arguments, the same for commands and HTTP calls.

    A method that drives a machine never needs thousands of arguments or
    megabytes of text; refusing them before any conversion keeps a flood of
    such commands from costing memory and CPU in the executing process.
    """

    max_arguments: int = DEFAULT_MAX_ARGUMENTS
    max_bytes: int = DEFAULT_MAX_COMMAND_BYTES

    def count_error(self, count: int) -> str | None:
        if count <= self.max_arguments:
            return None
        return (f"{TOO_MANY_ARGUMENTS}: {count} arguments, the limit is {self.max_arguments} "
                "(OPENFACTORY_MAX_ARGUMENTS)")

    def size_error(self, size: int, what: str = "the serialized arguments are") -> str | None:
        if size <= self.max_bytes:
            return None
        return (f"{ARGUMENTS_TOO_LARGE}: {what} {size} bytes, the limit is {self.max_bytes} bytes "
                "(OPENFACTORY_MAX_COMMAND_BYTES)")


def arguments_size(arguments: dict[str, Any]) -> int:
    """Bytes of the arguments object as compact UTF-8 JSON (what ``OPENFACTORY_MAX_COMMAND_BYTES`` bounds)."""
    return len(json.dumps(arguments, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


class EnvelopeError(ValueError):
    """A command envelope that breaks the contract.

    ``correlation_id`` and ``sender_uuid`` are filled when they could be read, so
    that the command can still be answered with ``REJECTED``; ``code`` is the
    reason it is counted under (``rejected_<code>``).
    """

    def __init__(
        self, reason: str, *, correlation_id: str | None = None, sender_uuid: str | None = None,
        code: str = INVALID_ENVELOPE,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.correlation_id = correlation_id
        self.sender_uuid = sender_uuid
        self.code = code


@dataclass(frozen=True, slots=True)
class Envelope:
    correlation_id: str
    sender_uuid: str
    timestamp: datetime
    signature: str | None
    arguments: dict[str, str] = field(default_factory=dict)
    # header.timestamp exactly as received when it was a string: a signature covers
    # that text, which re-formatting the parsed datetime would not reproduce.
    raw_timestamp: str | None = None

    def timestamp_text(self) -> str:
        """The timestamp as it travels: the received text, else the ISO 8601 form we write."""
        if self.raw_timestamp is not None:
            return self.raw_timestamp
        return self.timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z")

    def to_json(self) -> str:
        """Compact JSON, as the reference's pydantic serialisation writes it."""
        return json.dumps(
            {
                "header": {
                    "correlation_id": self.correlation_id,
                    "sender_uuid": self.sender_uuid,
                    "timestamp": self.timestamp_text(),
                    "signature": self.signature,
                },
                "arguments": self.arguments,
            },
            separators=(",", ":"),
        )


def new_envelope(
    sender_uuid: str,
    arguments: dict[str, Any] | None = None,
    *,
    correlation_id: str | None = None,
    signature: str | None = None,
) -> Envelope:
    """An outgoing command: arguments travel as strings, as the contract says."""
    args = {str(k): _argument_text(v) for k, v in (arguments or {}).items()}
    return Envelope(
        correlation_id=correlation_id or str(uuid.uuid4()),
        sender_uuid=sender_uuid,
        timestamp=datetime.now(UTC),
        signature=signature,
        arguments=args,
    )


def _argument_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def canonical_uuid(value: Any) -> str:
    """A correlation id as the executor compares it (ValueError when it is not a UUID)."""
    if not isinstance(value, str):
        raise ValueError("must be a UUID string")
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise ValueError(f"{value!r} is not a UUID") from None


def parse_envelope(raw: Any, limits: ArgumentLimits | None = None) -> Envelope:
    """Validate an envelope (a JSON string or an already decoded object).

    With ``limits``, too many or too large arguments raise an EnvelopeError
    whose ``code`` is ``too_many_arguments`` or ``arguments_too_large``.
    """
    if isinstance(raw, (bytes, str)):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting past the decoder's limit
            raise EnvelopeError(f"command VALUE is not a JSON envelope: {exc}") from None
    if not isinstance(raw, dict):
        raise EnvelopeError(f"command envelope must be a JSON object, got {type(raw).__name__}")
    header = raw.get("header")
    if not isinstance(header, dict):
        raise EnvelopeError("command envelope lacks a 'header' object")
    correlation_id: str | None = None
    sender_uuid: str | None = None
    cid_error: str | None
    try:
        correlation_id = canonical_uuid(header.get("correlation_id"))
    except ValueError as exc:
        correlation_id = None
        cid_error = f"header.correlation_id {exc}" if "correlation_id" in header else (
            "header.correlation_id is required"
        )
    else:
        cid_error = None
    raw_sender = header.get("sender_uuid")
    if isinstance(raw_sender, str) and raw_sender.strip():
        sender_uuid = raw_sender.strip()

    def reject(reason: str, code: str = INVALID_ENVELOPE) -> EnvelopeError:
        return EnvelopeError(reason, correlation_id=correlation_id, sender_uuid=sender_uuid, code=code)

    if cid_error:
        raise reject(cid_error)
    unknown = sorted(set(raw) - _ENVELOPE_FIELDS)
    if unknown:
        raise reject(f"unknown envelope field(s): {', '.join(unknown)}")
    unknown = sorted(set(header) - _HEADER_FIELDS)
    if unknown:
        raise reject(f"unknown header field(s): {', '.join(unknown)}")
    if sender_uuid is None:
        raise reject("header.sender_uuid is required and must be a non-empty string")
    if header.get("timestamp") is None:
        timestamp = datetime.now(UTC)
    else:
        try:
            timestamp = parse_timestamp(header["timestamp"])
        except ValueError as exc:
            raise reject(f"header.timestamp: {exc}") from None
    signature = header.get("signature")
    if signature is not None and not isinstance(signature, str):
        raise reject("header.signature must be a string or null")
    arguments = raw.get("arguments", {})
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise reject("arguments must be an object of string to string")
    if limits is not None and (error := limits.count_error(len(arguments))):
        raise reject(error, TOO_MANY_ARGUMENTS)  # before listing thousands of bad names below
    bad = sorted(k for k, v in arguments.items() if not isinstance(v, str))
    if bad:
        raise reject(f"argument(s) {', '.join(bad)} must be strings (the contract sends text)")
    if limits is not None and (error := limits.size_error(arguments_size(arguments))):
        raise reject(error, ARGUMENTS_TOO_LARGE)
    return Envelope(
        correlation_id=correlation_id,  # type: ignore[arg-type]  # None only with cid_error, raised above
        sender_uuid=sender_uuid,
        timestamp=timestamp,
        signature=signature.strip() if isinstance(signature, str) else None,
        arguments={k.strip(): v.strip() for k, v in arguments.items()},
        raw_timestamp=header["timestamp"] if isinstance(header.get("timestamp"), str) else None,
    )


@dataclass(frozen=True, slots=True)
class CommandResult:
    method: str
    correlation_id: str | None
    sender_uuid: str | None
    status: Status
    result: Any = None
    error: str | None = None
    duration_ms: float = 0.0

    def to_value(self) -> str:
        """The ``_RESULT`` VALUE: a JSON string inside the record's JSON."""
        value = self.as_dict()
        del value["method"]  # the record's ID carries it
        return json.dumps(value, separators=(",", ":"), allow_nan=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "correlation_id": self.correlation_id,
            "sender_uuid": self.sender_uuid,
            "status": self.status,
            "result": self.result,
            "error": self.error,
            "duration_ms": round(self.duration_ms, 3),
        }

    @classmethod
    def from_record(cls, record: Record) -> CommandResult:
        """Read a ``_RESULT`` record back (callers waiting for their answer)."""
        if not record.id.endswith(RESULT_SUFFIX):
            raise ValueError(f"{record.id!r} is not a result attribute")
        return cls.from_value(record.id[: -len(RESULT_SUFFIX)], record.value)

    @classmethod
    def from_value(cls, method: str, value: Any) -> CommandResult:
        """A ``<method>_RESULT`` VALUE (the JSON text) read back."""
        try:
            data = json.loads(value) if isinstance(value, str) else None
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict) or data.get("status") not in (OK, ERROR, REJECTED):
            raise ValueError(f"result record {method + RESULT_SUFFIX!r} has a malformed VALUE")
        return cls(
            method=method,
            correlation_id=data.get("correlation_id"),
            sender_uuid=data.get("sender_uuid"),
            status=data["status"],
            result=data.get("result"),
            error=data.get("error"),
            duration_ms=_number(data.get("duration_ms")),
        )


def _number(value: Any) -> float:
    """A duration read from someone's record: anything not a finite number counts as 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value) if value == value and abs(value) != float("inf") else 0.0


def json_safe(value: Any) -> Any:
    """A method's return value if it is JSON-serialisable, else its ``repr``."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return value


def command_record(target_uuid: str, method: str, envelope: Envelope) -> Record:
    return Record.create(
        target_uuid,
        method + COMMAND_SUFFIX,
        envelope.to_json(),
        tag=COMMAND_TAG,
        type=OPENFACTORY,
    )


def result_record(asset_uuid: str, result: CommandResult) -> Record:
    return Record.create(
        asset_uuid,
        result.method + RESULT_SUFFIX,
        result.to_value(),
        tag=RESULT_TAG,
        type=OPENFACTORY,
        timestamp=format_timestamp(),
    )


def is_command(record: Record) -> bool:
    return record.id.endswith(COMMAND_SUFFIX) and len(record.id) > len(COMMAND_SUFFIX)


def is_result(record: Record) -> bool:
    return record.id.endswith(RESULT_SUFFIX) and len(record.id) > len(RESULT_SUFFIX)


def result_correlation_id(record: Record) -> str | None:
    """Cheap read of a result's correlation id (used to suppress duplicates)."""
    if not isinstance(record.value, str):
        return None
    try:
        data = json.loads(record.value)
    except (ValueError, RecursionError):  # a poison _RESULT must not stop the dispatcher
        return None
    cid = data.get("correlation_id") if isinstance(data, dict) else None
    return cid if isinstance(cid, str) else None
