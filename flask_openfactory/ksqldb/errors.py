"""What ksqlDB refusing or failing looks like to a caller, and how its error frames are recognised.

Every other part of the client raises these; recognising ksqlDB's own error
shapes lives here too, so that neither an HTTP error body nor an error frame
inside a query answer can ever pass as data.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["KsqlDBError", "KsqlDBUnavailable", "error_from_object", "snippet"]

_SNIPPET = 300


class KsqlDBError(Exception):
    """ksqlDB refused a request or answered something we cannot use.

    The message carries the URL and ksqlDB's own error code and text, because
    the person reading a log line needs those to fix a statement, a missing
    stream or a wrong ``KSQLDB_URL``; the same facts are kept as attributes
    for code that wants to branch on them.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status: int | None = None,
        error_code: int | None = None,
        ksql_message: str | None = None,
    ) -> None:
        self.url = url
        self.status = status
        self.error_code = error_code
        self.ksql_message = ksql_message
        details = []
        if url is not None:
            details.append(f"url: {url}")
        if status is not None:
            details.append(f"HTTP {status}")
        if error_code is not None:
            details.append(f"ksqlDB error_code {error_code}")
        if ksql_message:
            details.append(f"ksqlDB says: {ksql_message}")
        text = f"{message} ({'; '.join(details)})" if details else message
        super().__init__(text)


class KsqlDBUnavailable(KsqlDBError):
    """ksqlDB could not be reached or did not answer in time.

    Kept separate so callers can fall back (e.g. to the default topic name)
    on an outage while still failing on a genuine statement error.
    """


def snippet(text: str) -> str:
    """``text`` trimmed to a length fit for an error message."""
    text = text.strip()
    return text if len(text) <= _SNIPPET else text[:_SNIPPET] + "..."


def error_from_object(obj: dict[str, Any], url: str, status: int | None) -> KsqlDBError | None:
    """Recognise ksqlDB's error shapes so none of them can pass as data."""
    inner = obj.get("errorMessage")
    if inner is not None:
        if isinstance(inner, dict):
            return error_from_object(inner, url, status) or KsqlDBError(
                "ksqlDB reported an error in its answer",
                url=url,
                status=status,
                ksql_message=snippet(json.dumps(inner)),
            )
        return KsqlDBError(
            "ksqlDB reported an error in its answer", url=url, status=status, ksql_message=str(inner)
        )
    kind = obj.get("@type")
    is_error_type = isinstance(kind, str) and kind.endswith("_error")
    if is_error_type or "error_code" in obj:
        code = obj.get("error_code")
        message = obj.get("message")
        return KsqlDBError(
            f"ksqlDB answered with {kind or 'an error'}",
            url=url,
            status=status,
            error_code=code if isinstance(code, int) else None,
            ksql_message=str(message) if message is not None else None,
        )
    return None
