"""Which call a request is, and who sends it: ``X-Correlation-ID`` and ``X-OpenFactory-Sender``.

A correlation id has one spelling on our routes (a canonical UUID, answered
in lower case), in a header or in a result URL alike.
"""

from __future__ import annotations

import re
from typing import Any

from flask import request
from webargs.flaskparser import abort  # flask_smorest.abort, typed NoReturn

SENDER_HEADER = "X-OpenFactory-Sender"
CORRELATION_HEADER = "X-Correlation-ID"
_UUID_FORM = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_CANONICAL_UUID = re.compile(_UUID_FORM)
CORRELATION_PATTERN = f"^{_UUID_FORM}$"  # what the OpenAPI document declares (ECMA-262: "$" is the end)
# In error messages only: as a documented example, Swagger UI would send it with every call.
CORRELATION_EXAMPLE = "550e8400-e29b-41d4-a716-446655440000"
DEFAULT_SENDER = "http"


def correlation_id_from_request() -> str | None:
    """The call's ``X-Correlation-ID`` in lower case, or None when the header is absent (a new id is made).

    The id identifies the call in the log (and makes a retry recognisable), so
    it has one spelling: a UUID in canonical hyphenated form, any case. An
    empty, blank or otherwise written value is a 400, never taken as "no id"
    and never rewritten into another form. Surrounding spaces and tabs are not
    part of an HTTP field value (RFC 9110) and are dropped, as servers do.
    """
    raw = request.headers.get(CORRELATION_HEADER)
    if raw is None:
        return None
    return canonical_correlation_id(raw, CORRELATION_HEADER, "headers")


def canonical_correlation_id(raw: str, where: str, location: str) -> str:
    """The one spelling of a correlation id (header or URL), or a 400 that says what is expected."""
    value = raw.strip(" \t")
    if _CANONICAL_UUID.fullmatch(value):
        return value.lower()
    expected = f"a UUID in canonical form, 8-4-4-4-12 hex digits ({CORRELATION_EXAMPLE}), or no header at all"
    if location != "headers":
        expected = f"a UUID in canonical form, 8-4-4-4-12 hex digits ({CORRELATION_EXAMPLE})"
    abort(
        400,
        message=f"{where} must be {expected}; got {raw[:64]!r}",
        errors={location: {where: [f"Must be {expected}."]}},
    )


def sender() -> str:
    return request.headers.get(SENDER_HEADER, "").strip() or DEFAULT_SENDER


HEADER_PARAMETERS: list[dict[str, Any]] = [
    {
        "in": "header",
        "name": CORRELATION_HEADER,
        "required": False,
        "schema": {"type": "string", "format": "uuid", "pattern": CORRELATION_PATTERN},
        "description": "Correlation id of this call: a UUID in canonical form (8-4-4-4-12 hex digits, any case; "
                       "answered in lower case). Absent: the server makes a new one. Any other value, an empty "
                       "one included, is a 400.",
    },
    {
        "in": "header",
        "name": SENDER_HEADER,
        "required": False,
        "schema": {"type": "string", "default": DEFAULT_SENDER},
        "description": "The calling asset's UUID, reported as sender_uuid",
    },
]
