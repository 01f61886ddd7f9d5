"""The OpenFactory wire format for attribute records: pure data, no I/O.

Every state change of an asset is one record on the assets topic, keyed by the
asset UUID. This module is the only place that knows the JSON field names and
the timestamp format, so that every transport writes byte-compatible records.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

JSONScalar = str | int | float | bool | None

SAMPLES = "Samples"
EVENTS = "Events"
CONDITION = "Condition"
METHOD = "Method"
OPENFACTORY = "OpenFactory"
RECORD_TYPES = frozenset({SAMPLES, EVENTS, CONDITION, METHOD, OPENFACTORY})

CONDITION_LEVELS = ("Normal", "Warning", "Fault")

COMMAND_SUFFIX = "_CMD"
RESULT_SUFFIX = "_RESULT"

# -- Added for issue #16 (the transports spell no wire literal by hand) -----------------
UNAVAILABLE = "UNAVAILABLE"  # the platform's placeholder for a value or timestamp not known
# -- end of the issue #16 additions ----------------------------------------------------


class RecordError(ValueError):
    """A record that does not follow the contract (bad JSON, missing field, bad type)."""


_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text
_milli: tuple[int, str] = (-1, "")  # the last millisecond stamped, and its timestamp


def _now_timestamp() -> str:
    """``format_timestamp()`` for now, without a datetime: every attribute set pays this.

    Under load many writes fall in one millisecond: its text is kept, and the
    second's. Each cache is one tuple, rebound whole, so threads never see a
    moment and the text of another.
    """
    global _second, _milli
    now = time.time_ns() // 1_000_000
    cached, stamp = _milli
    if cached == now:
        return stamp
    second, millis = divmod(now, 1000)
    cached, text = _second
    if cached != second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        _second = (second, text)
    stamp = f"{text}{millis:03d}Z"
    _milli = (now, stamp)
    return stamp


def format_timestamp(moment: datetime | None = None) -> str:
    """UTC, ISO 8601, three fractional digits truncated (not rounded), literal ``Z``."""
    if moment is None:
        return _now_timestamp()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    else:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_timestamp(value: Any) -> datetime:
    """Read an ISO 8601 string or an epoch number (seconds, or milliseconds when large)."""
    if isinstance(value, bool):
        raise ValueError("a timestamp must be an ISO 8601 string or an epoch number, not a boolean")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError("a timestamp must be a finite number")
        seconds = value / 1000.0 if abs(value) > 2e10 else float(value)
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"epoch timestamp {value!r} is out of range") from exc
    if isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            try:
                return parse_timestamp(float(text))
            except ValueError:
                raise ValueError(f"{value!r} is not an ISO 8601 timestamp") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    raise ValueError(f"a timestamp must be an ISO 8601 string or an epoch number, got {type(value).__name__}")


def validate_identifier(kind: str, value: Any) -> str:
    """Reject names the platform's fan-out layer cannot route (NATS subject tokens)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{kind} must be a non-empty string, got {value!r}")
    if value != value.strip():
        raise ValueError(f"{kind} {value!r} has leading or trailing white space")
    for bad in (".", "*", ">", " ", "\t", "\n"):
        if bad in value:
            shown = {" ": "a space", "\t": "a tab", "\n": "a newline"}.get(bad, f"'{bad}'")
            raise ValueError(
                f"{kind} {value!r} contains {shown}, which OpenFactory's fan-out layer cannot route"
            )
    return value


def check_value(value: Any) -> JSONScalar:
    """Attribute values are JSON scalars; NaN and infinities are not JSON."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"attribute value {value!r} is not representable in JSON")
        return value
    raise ValueError(
        f"attribute values must be JSON scalars (str, int, float, bool or None), got {type(value).__name__}"
    )


_quote = json.encoder.encode_basestring_ascii
_FRAGMENTS: dict[tuple[str, str, str], tuple[str, str]] = {}


def _fragments(rid: str, tag: str, rtype: str) -> tuple[str, str]:
    key = (rid, tag, rtype)
    found = _FRAGMENTS.get(key)
    if found is None:
        if len(_FRAGMENTS) > 50_000:  # IDs are declared, so this only guards odd callers
            _FRAGMENTS.clear()
        found = _FRAGMENTS[key] = (
            f'{{"ID": {_quote(rid)}, "VALUE": ',
            f', "TAG": {_quote(tag)}, "TYPE": {_quote(rtype)}, "attributes": {{"timestamp": ',
        )
    return found


def _json_scalar(value: JSONScalar) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"attribute value {value!r} is not representable in JSON")
        return float.__repr__(value)
    return int.__repr__(value)


@dataclass(frozen=True, slots=True)
class Record:
    """One attribute record of one asset, as it travels on the assets topic."""

    asset_uuid: str
    id: str
    value: JSONScalar
    tag: str
    type: str
    timestamp: str

    @classmethod
    def create(
        cls,
        asset_uuid: str,
        id: str,
        value: Any,
        *,
        tag: str,
        type: str,
        timestamp: str | None = None,
    ) -> Record:
        """Build a checked record; the timestamp is taken now, when the value is set."""
        if type not in RECORD_TYPES:
            raise ValueError(f"record TYPE must be one of {sorted(RECORD_TYPES)}, got {type!r}")
        return cls(asset_uuid, id, check_value(value), tag, type, timestamp or format_timestamp())

    def to_wire(self) -> bytes:
        """The record's Kafka value: exactly the contract's fields and casing.

        Byte for byte what ``json.dumps`` of the record's dict writes, built
        from fragments cached per (ID, TAG, TYPE): this runs on every write.
        """
        head, tail = _fragments(self.id, self.tag, self.type)
        return f"{head}{_json_scalar(self.value)}{tail}{_quote(self.timestamp)}}}}}".encode("ascii")

    @property
    def key(self) -> bytes:
        return self.asset_uuid.encode("utf-8")

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape used by the HTTP API and the CLI."""
        return {
            "id": self.id,
            "value": self.value,
            "tag": self.tag,
            "type": self.type,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_wire(cls, key: bytes | str | None, value: bytes | str | None) -> Record:
        """Decode a record read from the log; anything malformed raises RecordError."""
        if key is None:
            raise RecordError("record has no key (asset UUID)")
        if value is None:
            raise RecordError("record has a null value (tombstone)")
        try:
            asset_uuid = key.decode("utf-8") if isinstance(key, bytes) else key
            data = json.loads(value)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            # RecursionError: nesting deeper than the decoder's limit; a
            # poison record must not kill, and so stall, every reader of the log
            raise RecordError(f"record value is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise RecordError(f"record value must be a JSON object, got {type(data).__name__}")
        missing = [field for field in ("ID", "TYPE") if field not in data]
        if missing:
            raise RecordError(f"record lacks field(s) {', '.join(missing)}")
        rid, rtype, tag = data["ID"], data["TYPE"], data.get("TAG", "")
        if not isinstance(rid, str) or not isinstance(rtype, str) or not isinstance(tag, str):
            raise RecordError("record fields ID, TYPE and TAG must be strings")
        if rtype not in RECORD_TYPES:
            raise RecordError(f"record TYPE {rtype!r} is not one of {sorted(RECORD_TYPES)}")
        attributes = data.get("attributes")
        timestamp = attributes.get("timestamp") if isinstance(attributes, dict) else None
        if not isinstance(timestamp, str):
            timestamp = UNAVAILABLE
        raw_value = data.get("VALUE")
        if isinstance(raw_value, (dict, list)):
            raise RecordError("record VALUE must be a JSON scalar")
        return cls(asset_uuid, rid, raw_value, tag, rtype, timestamp)


_new = object.__new__
_SETTERS = tuple(Record.__dict__[field.name].__set__ for field in fields(Record))  # in the order of __init__


def stamped_record(asset_uuid: str, id: str, value: JSONScalar, tag: str, type: str, timestamp: str) -> Record:
    """``Record(...)`` for fields checked already, at half the cost: every attribute set builds one.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``
    (1.1 µs for six here); the slots' own descriptors set the same fields directly.
    """
    record = _new(Record)
    set_asset, set_id, set_value, set_tag, set_type, set_timestamp = _SETTERS
    set_asset(record, asset_uuid)
    set_id(record, id)
    set_value(record, value)
    set_tag(record, tag)
    set_type(record, type)
    set_timestamp(record, timestamp)
    return record
