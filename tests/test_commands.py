import json
import uuid

import pytest

from flask_openfactory.wire.commands import (
    CommandResult,
    EnvelopeError,
    command_record,
    new_envelope,
    parse_envelope,
    result_record,
)

CID = "550e8400-e29b-41d4-a716-446655440000"


def envelope(**header_extra):
    header = {"correlation_id": CID, "sender_uuid": "HMI-CNC-9207", "timestamp": "2026-02-21T12:00:00.123456Z",
              "signature": None}
    header.update(header_extra)
    return {"header": header, "arguments": {"x": " 10 ", "y": "20"}}


def test_reference_envelope_parses_and_strips():
    env = parse_envelope(json.dumps(envelope()))
    assert env.correlation_id == CID
    assert env.sender_uuid == "HMI-CNC-9207"
    assert env.arguments == {"x": "10", "y": "20"}
    assert env.signature is None


def test_optional_fields_default():
    env = parse_envelope({"header": {"correlation_id": CID.replace("-", "").upper(), "sender_uuid": "S"}})
    assert env.correlation_id == CID  # canonical dashed lower-case
    assert env.arguments == {}


@pytest.mark.parametrize(
    "raw, reason, has_cid",
    [
        ("not json", "not a JSON envelope", False),
        ("[]", "JSON object", False),
        ({"arguments": {}}, "lacks a 'header'", False),
        ({"header": {"sender_uuid": "S"}}, "correlation_id is required", False),
        ({"header": {"correlation_id": "nope", "sender_uuid": "S"}}, "not a UUID", False),
        ({"header": {"correlation_id": CID}}, "sender_uuid is required", True),
        ({"header": {"correlation_id": CID, "sender_uuid": "S", "extra": 1}}, "unknown header field", True),
        ({"header": {"correlation_id": CID, "sender_uuid": "S"}, "more": 1}, "unknown envelope field", True),
        ({"header": {"correlation_id": CID, "sender_uuid": "S", "timestamp": "soon"}}, "header.timestamp", True),
        ({"header": {"correlation_id": CID, "sender_uuid": "S", "signature": 5}}, "signature", True),
        ({"header": {"correlation_id": CID, "sender_uuid": "S"}, "arguments": {"x": 10}}, "must be strings", True),
        ({"header": {"correlation_id": CID, "sender_uuid": "S"}, "arguments": ["x"]}, "object of string", True),
    ],
)
def test_bad_envelopes_are_rejected_with_reason_and_cid_when_known(raw, reason, has_cid):
    with pytest.raises(EnvelopeError, match=reason) as info:
        parse_envelope(json.dumps(raw) if not isinstance(raw, str) else raw)
    assert (info.value.correlation_id == CID) is has_cid


def test_outgoing_command_record_shape():
    env = new_envelope("CALLER", {"x": 3, "flag": True, "name": "a"}, correlation_id=CID)
    record = command_record("TARGET", "move_axis", env)
    assert (record.asset_uuid, record.id, record.tag, record.type) == (
        "TARGET", "move_axis_CMD", "Method.Command", "OpenFactory")
    inner = json.loads(record.value)
    assert inner["header"]["correlation_id"] == CID
    assert inner["header"]["signature"] is None
    assert inner["arguments"] == {"x": "3", "flag": "true", "name": "a"}
    assert parse_envelope(record.value).arguments == inner["arguments"]


def test_result_record_round_trip_and_literal_value():
    result = CommandResult("move_axis", CID, "CALLER", "OK", result={"x": 1.0}, duration_ms=1.23456)
    record = result_record("ME", result)
    assert (record.id, record.tag, record.type) == ("move_axis_RESULT", "Method.Result", "OpenFactory")
    assert json.loads(record.value) == {
        "correlation_id": CID, "sender_uuid": "CALLER", "status": "OK", "result": {"x": 1.0},
        "error": None, "duration_ms": 1.235,
    }
    assert CommandResult.from_record(record).result == {"x": 1.0}


def test_new_envelope_generates_uuid4():
    env = new_envelope("S")
    assert uuid.UUID(env.correlation_id).version == 4
