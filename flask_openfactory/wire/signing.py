"""Signed commands: canonical serialisation and HMAC-SHA256 (pure, no I/O).

The platform's envelope carries ``header.signature`` and never checks it. When
assets share a secret, the signature binds the command to its target asset,
method, correlation id, sender, timestamp and arguments, so that a captured
command cannot be altered, or replayed against another asset or method.

Canonical message (what is signed), documented in the README for other assets:
UTF-8 bytes of the compact JSON object (keys sorted by code point, separators
``,`` and ``:``, no ASCII escaping; the same as JavaScript's ``JSON.stringify``
with sorted keys)::

    {"arguments":{...},"correlation_id":"...","method":"...",
     "sender_uuid":"...","target":"...","timestamp":"..."}

Signature: ``"v1=" + lowercase hex HMAC-SHA256(secret as UTF-8, message)``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import replace

from .commands import Envelope

VERSION_PREFIX = "v1="
MIN_SECRET_LENGTH = 16
# Seconds a signed command's timestamp may lie ahead of this host's clock; beyond
# that it would outlive OPENFACTORY_COMMAND_MAX_AGE, so it is refused.
MAX_CLOCK_SKEW = 30.0


class SigningKeys:
    """Shared secrets: the first signs, any of them verifies (key rotation).

    A wrapper rather than bare strings so that no repr, log line or status
    dump can ever show a secret.
    """

    __slots__ = ("_secrets",)

    def __init__(self, secrets: str | Iterable[str]) -> None:
        items = (secrets,) if isinstance(secrets, str) else tuple(secrets)
        if not items:
            raise ValueError("at least one secret is needed")
        for item in items:
            if not isinstance(item, str) or not item:
                raise ValueError("every secret must be a non-empty string")
        self._secrets: tuple[bytes, ...] = tuple(s.encode("utf-8") for s in items)

    def __len__(self) -> int:
        return len(self._secrets)

    def __repr__(self) -> str:
        return f"SigningKeys(<{len(self._secrets)} secret(s), masked>)"

    __str__ = __repr__

    def sign(self, message: bytes) -> str:
        """The ``v1=`` signature of ``message`` with the first (current) secret."""
        return VERSION_PREFIX + hmac.new(self._secrets[0], message, hashlib.sha256).hexdigest()

    def verify(self, message: bytes, signature: str | None) -> bool:
        """Constant-time check against every secret; malformed signatures are simply false."""
        if not isinstance(signature, str) or not signature.startswith(VERSION_PREFIX):
            return False
        given = signature[len(VERSION_PREFIX):].strip().lower().encode("utf-8")
        ok = False
        for secret in self._secrets:  # no early exit: the time does not say which key matched
            expected = hmac.new(secret, message, hashlib.sha256).hexdigest().encode("ascii")
            ok = hmac.compare_digest(expected, given) or ok
        return ok


def canonical_message(
    *,
    target: str,
    method: str,
    correlation_id: str,
    sender_uuid: str,
    timestamp: str,
    arguments: Mapping[str, str],
) -> bytes:
    """The exact bytes that are signed; every value must be a string."""
    values = {"target": target, "method": method, "correlation_id": correlation_id,
              "sender_uuid": sender_uuid, "timestamp": timestamp}
    for name, value in values.items():
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string to be signed, got {type(value).__name__}")
    args = dict(arguments)
    for key, value in args.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("signed arguments must map strings to strings")
    payload = {**values, "arguments": args}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def envelope_message(envelope: Envelope, target: str, method: str) -> bytes:
    """The message of an envelope: its timestamp exactly as it travels (``timestamp_text``)."""
    return canonical_message(target=target, method=method, correlation_id=envelope.correlation_id,
                             sender_uuid=envelope.sender_uuid, timestamp=envelope.timestamp_text(),
                             arguments=envelope.arguments)


def sign_envelope(envelope: Envelope, target: str, method: str, keys: SigningKeys | str) -> Envelope:
    """A copy of an outgoing envelope carrying its signature for ``method`` on ``target``."""
    if isinstance(keys, str):
        keys = SigningKeys(keys)
    return replace(envelope, signature=keys.sign(envelope_message(envelope, target, method)))
