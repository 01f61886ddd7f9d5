"""Canonical serialisation and HMAC signatures (pure): pinned so other assets can sign."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from flask_openfactory.wire.commands import Envelope, new_envelope, parse_envelope
from flask_openfactory.wire.signing import SigningKeys, canonical_message, envelope_message, sign_envelope

SECRET = "correct horse battery staple"
CID = "550e8400-e29b-41d4-a716-446655440000"
TIMESTAMP = "2026-02-21T12:00:00.123456Z"
ARGUMENTS = {"x": "10", "tool": 'fraise Ø6 "rapide"\nlot 2', "speed": "100"}

# Written by hand: sorted keys, no white space, UTF-8 (not \u escapes), JSON escapes for " and \n.
GOLDEN = (
    b'{"arguments":{"speed":"100","tool":"fraise \xc3\x986 \\"rapide\\"\\nlot 2","x":"10"},'
    b'"correlation_id":"550e8400-e29b-41d4-a716-446655440000","method":"move_axis",'
    b'"sender_uuid":"HMI-CNC-9207","target":"CNC-MACHINE-01","timestamp":"2026-02-21T12:00:00.123456Z"}'
)
# Computed outside Python: `openssl dgst -sha256 -hmac "correct horse battery staple"` over GOLDEN.
GOLDEN_HMAC = "117678159882dbe2d40c860f3bd7e8edefb9482e0dbd465f5831fb3ca8bbeef5"


def golden_message() -> bytes:
    return canonical_message(target="CNC-MACHINE-01", method="move_axis", correlation_id=CID,
                             sender_uuid="HMI-CNC-9207", timestamp=TIMESTAMP, arguments=ARGUMENTS)


def test_canonical_message_is_the_documented_bytes() -> None:
    assert golden_message() == GOLDEN


def test_signature_is_v1_and_lowercase_hex_hmac_sha256() -> None:
    assert hmac.new(SECRET.encode(), GOLDEN, hashlib.sha256).hexdigest() == GOLDEN_HMAC
    assert SigningKeys(SECRET).sign(golden_message()) == "v1=" + GOLDEN_HMAC


def test_readme_example() -> None:
    """The example in the README's "Signing commands" section (HMAC from openssl)."""
    message = canonical_message(target="CNC-MACHINE-01", method="move_axis", correlation_id=CID,
                                sender_uuid="HMI-CNC-9207", timestamp=TIMESTAMP,
                                arguments={"x": "10", "speed": "100"})
    assert message == (b'{"arguments":{"speed":"100","x":"10"},"correlation_id":"550e8400-e29b-41d4-a716-'
                       b'446655440000","method":"move_axis","sender_uuid":"HMI-CNC-9207","target":'
                       b'"CNC-MACHINE-01","timestamp":"2026-02-21T12:00:00.123456Z"}')
    assert SigningKeys(SECRET).sign(message) == (
        "v1=232befd72c5415faa44bf20978cbc49424d7d8685e024c1f27ec0bbbc341f954")


def test_verify_accepts_the_signature_and_nothing_else() -> None:
    keys = SigningKeys(SECRET)
    good = "v1=" + GOLDEN_HMAC
    assert keys.verify(GOLDEN, good)
    assert keys.verify(GOLDEN, good.upper().replace("V1=", "v1="))  # hex case does not matter
    for bad in (None, "", GOLDEN_HMAC, "v2=" + GOLDEN_HMAC, "v1=" + GOLDEN_HMAC[:-1] + "0",
                "v1=" + GOLDEN_HMAC[:-2], "v1=zz", "v1=é" + GOLDEN_HMAC):
        assert not keys.verify(GOLDEN, bad), bad
    assert not SigningKeys("another secret, same length").verify(GOLDEN, good)
    assert not keys.verify(GOLDEN.replace(b"move_axis", b"home"), good)


def test_every_signed_field_changes_the_message() -> None:
    base = dict(target="T", method="m", correlation_id=CID, sender_uuid="S", timestamp=TIMESTAMP,
                arguments={"a": "1"})
    variants = [dict(base, target="T2"), dict(base, method="m2"), dict(base, sender_uuid="S2"),
                dict(base, correlation_id=CID.replace("0", "1")), dict(base, timestamp=TIMESTAMP + " "),
                dict(base, arguments={"a": "2"}), dict(base, arguments={"a": "1", "b": ""}),
                dict(base, arguments={})]
    messages = {canonical_message(**v) for v in variants}  # type: ignore[arg-type]
    assert len(messages) == len(variants) and canonical_message(**base) not in messages  # type: ignore[arg-type]


def test_non_string_values_cannot_be_signed() -> None:
    with pytest.raises(TypeError, match="arguments"):
        canonical_message(target="T", method="m", correlation_id=CID, sender_uuid="S",
                          timestamp=TIMESTAMP, arguments={"a": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="timestamp"):
        canonical_message(target="T", method="m", correlation_id=CID, sender_uuid="S",
                          timestamp=1.5, arguments={})  # type: ignore[arg-type]


def test_rotation_first_secret_signs_any_verifies() -> None:
    old, new = "the old shared secret", "the new shared secret"
    assert SigningKeys([new, old]).verify(GOLDEN, SigningKeys(old).sign(GOLDEN))
    assert SigningKeys([new, old]).sign(GOLDEN) == SigningKeys(new).sign(GOLDEN)
    with pytest.raises(ValueError):
        SigningKeys([])


def test_keys_never_show_the_secret() -> None:
    keys = SigningKeys([SECRET, "second secret value"])
    assert SECRET not in repr(keys) and SECRET not in str(keys) and "masked" in repr(keys)
    assert SECRET not in f"{keys!r} {keys}"


def test_signed_envelope_verifies_after_the_wire_round_trip() -> None:
    envelope = sign_envelope(new_envelope("HMI-CNC-9207", {"x": 10, "on": True}), "CNC-1", "move_axis", SECRET)
    assert envelope.signature and envelope.signature.startswith("v1=")
    received = parse_envelope(envelope.to_json())
    assert received.raw_timestamp == json.loads(envelope.to_json())["header"]["timestamp"]
    assert SigningKeys(SECRET).verify(envelope_message(received, "CNC-1", "move_axis"), received.signature)
    assert not SigningKeys(SECRET).verify(envelope_message(received, "CNC-2", "move_axis"), received.signature)
    assert not SigningKeys(SECRET).verify(envelope_message(received, "CNC-1", "home"), received.signature)


def test_received_timestamp_is_signed_as_written_not_as_reformatted() -> None:
    """Another asset writes +00:00 and no microseconds; re-formatting would break its signature."""
    written = "2026-02-21T12:00:00+00:00"
    message = canonical_message(target="T", method="m", correlation_id=CID, sender_uuid="S",
                                timestamp=written, arguments={})
    raw = {"header": {"correlation_id": CID, "sender_uuid": "S", "timestamp": written,
                      "signature": SigningKeys(SECRET).sign(message)}}
    received = parse_envelope(json.dumps(raw))
    assert received.timestamp == datetime(2026, 2, 21, 12, tzinfo=UTC)
    assert received.timestamp_text() == written
    assert SigningKeys(SECRET).verify(envelope_message(received, "T", "m"), received.signature)
    assert json.loads(received.to_json())["header"]["timestamp"] == written


def test_epoch_timestamps_have_no_raw_text() -> None:
    received = parse_envelope({"header": {"correlation_id": CID, "sender_uuid": "S", "timestamp": 1771675200}})
    assert received.raw_timestamp is None
    built = Envelope(CID, "S", datetime(2026, 2, 21, 12, tzinfo=UTC), None)
    assert built.timestamp_text() == "2026-02-21T12:00:00Z"
