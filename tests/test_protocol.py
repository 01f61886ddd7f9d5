import json
from datetime import UTC, datetime, timezone

import pytest

from flask_openfactory.wire.protocol import (
    Record,
    RecordError,
    format_timestamp,
    parse_timestamp,
    stamped_record,
    validate_identifier,
)


def test_timestamp_has_three_truncated_digits_and_z():
    moment = datetime(2026, 5, 4, 12, 34, 56, 789999, tzinfo=UTC)
    assert format_timestamp(moment) == "2026-05-04T12:34:56.789Z"


def test_timestamp_converts_to_utc_and_treats_naive_as_utc():
    from datetime import timedelta

    local = datetime(2026, 5, 4, 14, 0, 0, 5000, tzinfo=timezone(timedelta(hours=2)))
    assert format_timestamp(local) == "2026-05-04T12:00:00.005Z"
    assert format_timestamp(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05.000Z"


def test_timestamp_now_matches_contract_shape():
    import re

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", format_timestamp())


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("2026-02-21T12:00:00.123456Z", datetime(2026, 2, 21, 12, 0, 0, 123456, tzinfo=UTC)),
        ("2026-02-21T14:00:00+02:00", datetime(2026, 2, 21, 12, 0, tzinfo=UTC)),
        (1771675200, datetime(2026, 2, 21, 12, 0, tzinfo=UTC)),
        (1771675200000, datetime(2026, 2, 21, 12, 0, tzinfo=UTC)),
        ("1771675200", datetime(2026, 2, 21, 12, 0, tzinfo=UTC)),
    ],
)
def test_parse_timestamp_accepts_iso_and_epoch(raw, expected):
    assert parse_timestamp(raw) == expected


@pytest.mark.parametrize("raw", ["yesterday", True, None, [], float("nan"), 1e300])
def test_parse_timestamp_rejects_garbage(raw):
    with pytest.raises(ValueError):
        parse_timestamp(raw)


def test_record_wire_format_is_the_contracts():
    record = Record.create("PROVER3018", "Zact", 24.5, tag="Position", type="Samples",
                           timestamp="2026-05-04T12:34:56.789Z")
    assert record.key == b"PROVER3018"
    assert record.to_wire() == (
        b'{"ID": "Zact", "VALUE": 24.5, "TAG": "Position", "TYPE": "Samples", '
        b'"attributes": {"timestamp": "2026-05-04T12:34:56.789Z"}}'
    )
    assert Record.from_wire(record.key, record.to_wire()) == record


def test_the_write_paths_constructor_builds_the_same_frozen_record():
    fields = ("PROVER3018", "Zact", 24.5, "Position", "Samples", "2026-05-04T12:34:56.789Z")
    fast, plain = stamped_record(*fields), Record(*fields)
    assert (fast, hash(fast), repr(fast), fast.to_wire()) == (plain, hash(plain), repr(plain), plain.to_wire())
    with pytest.raises(AttributeError):
        fast.value = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("bad_type", ["Sample", "samples", "UNAVAILABLE", ""])
def test_record_rejects_unknown_types(bad_type):
    with pytest.raises(ValueError, match="TYPE"):
        Record.create("A", "x", 1, tag="t", type=bad_type)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {"a": 1}, [1], object()])
def test_record_rejects_values_that_are_not_json_scalars(value):
    with pytest.raises(ValueError):
        Record.create("A", "x", value, tag="t", type="Events")


@pytest.mark.parametrize(
    "key, value, reason",
    [
        (b"A", None, "tombstone"),
        (None, b"{}", "no key"),
        (b"A", b"not json", "not JSON"),
        (b"A", b"[1, 2]", "JSON object"),
        (b"A", b'{"VALUE": 1, "TYPE": "Events"}', "ID"),
        (b"A", b'{"ID": "x", "VALUE": 1, "TYPE": "Bogus"}', "TYPE"),
        (b"A", b'{"ID": 3, "VALUE": 1, "TYPE": "Events"}', "strings"),
        (b"A", b'{"ID": "x", "VALUE": {"a": 1}, "TYPE": "Events"}', "scalar"),
        (b"\xff", b'{"ID": "x", "TYPE": "Events"}', "not JSON"),
    ],
)
def test_from_wire_rejects_malformed_records_with_a_reason(key, value, reason):
    with pytest.raises(RecordError, match=reason):
        Record.from_wire(key, value)


def test_from_wire_tolerates_missing_timestamp_and_tag():
    record = Record.from_wire(b"A", json.dumps({"ID": "x", "VALUE": 1, "TYPE": "Events"}))
    assert (record.tag, record.timestamp) == ("", "UNAVAILABLE")


@pytest.mark.parametrize("bad", ["", "a.b", "a b", " a", "a*", "a>", 5, None])
def test_identifiers_the_fan_out_layer_cannot_route_are_rejected(bad):
    with pytest.raises(ValueError):
        validate_identifier("asset UUID", bad)


def test_valid_identifier_passes_through():
    assert validate_identifier("asset UUID", "app-scheduler_1") == "app-scheduler_1"
