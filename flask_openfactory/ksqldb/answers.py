"""Reading ksqlDB's ``/query`` answers: both formats, every row checked, no error frame let through.

It speaks HTTP/1.1 (``requests``), so ``/query`` answers in ksqlDB's legacy
JSON-array format; the newline-delimited HTTP/2 format is parsed as well in
case a proxy in between answers that way. An answer of an unexpected shape
fails loudly instead of yielding empty results.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import KsqlDBError, error_from_object, snippet

__all__ = ["lookup", "parse_query_answer"]


def _shape_error(url: str, status: int | None, what: str) -> KsqlDBError:
    return KsqlDBError(f"unexpected /query answer: {what}", url=url, status=status)


def parse_query_answer(text: str, url: str, status: int | None) -> list[dict[str, Any]]:
    """Parse either /query format; the first character tells them apart.

    Public so that the answer's whole grammar can be fuzzed without a server.

    The legacy (HTTP/1.1) answer is one JSON array; the HTTP/2 answer is one
    JSON value per line starting with a header object.
    """
    body = text.strip()
    if not body:
        raise _shape_error(url, status, "empty body, expected a JSON array with a header element")
    if body[0] == "[":
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise _shape_error(
                url, status, f"expected a JSON array, got invalid JSON: {snippet(body)!r}"
            ) from None
        return _parse_legacy(doc, url, status)
    if body[0] == "{":
        try:
            single = json.loads(body)
        except (ValueError, RecursionError):
            return _parse_delimited(body.splitlines(), url, status)
        if isinstance(single, dict):
            return _parse_delimited([body], url, status)
    raise _shape_error(
        url, status, f"expected a JSON array or newline-delimited JSON, got {snippet(body)!r}"
    )


def _parse_legacy(doc: Any, url: str, status: int | None) -> list[dict[str, Any]]:
    if not isinstance(doc, list):
        raise _shape_error(url, status, "expected a JSON array")
    columns: list[str] | None = None
    rows: list[dict[str, Any]] = []
    for index, element in enumerate(doc):
        if not isinstance(element, dict):
            raise _shape_error(
                url, status, f"element {index} is {type(element).__name__}, expected an object"
            )
        err = error_from_object(element, url, status)
        if err is not None:
            raise err
        if element.get("header") is not None:
            header = element["header"]
            schema = header.get("schema") if isinstance(header, dict) else None
            if not isinstance(schema, str):
                raise _shape_error(url, status, f"header without a schema string: {header!r}")
            try:
                columns = _column_names(schema)
            except ValueError as exc:
                raise _shape_error(url, status, f"cannot read header schema {schema!r}: {exc}") from None
        elif element.get("row") is not None:
            row = element["row"]
            values = row.get("columns") if isinstance(row, dict) else None
            if columns is None:
                raise _shape_error(url, status, "a row arrived before the header element")
            if not isinstance(values, list):
                raise _shape_error(url, status, f"row {index} has no columns list: {row!r}")
            if row.get("tombstone"):
                continue
            if len(values) != len(columns):
                raise _shape_error(
                    url, status, f"row {index} has {len(values)} values for {len(columns)} columns"
                )
            rows.append(dict(zip(columns, values, strict=True)))
        elif "finalMessage" in element:
            break
        # Anything else (consistencyToken, sourceHost, ...) carries no data.
    if columns is None:
        raise _shape_error(url, status, "missing header element (expected {'header': {'schema': ...}})")
    return rows


def _parse_delimited(lines: list[str], url: str, status: int | None) -> list[dict[str, Any]]:
    columns: list[str] | None = None
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            element = json.loads(line)
        except (ValueError, RecursionError):
            raise _shape_error(url, status, f"line {number} is not JSON: {snippet(line)!r}") from None
        if isinstance(element, list):
            if columns is None:
                raise _shape_error(url, status, "a row arrived before the header object")
            if len(element) != len(columns):
                raise _shape_error(
                    url, status, f"line {number} has {len(element)} values for {len(columns)} columns"
                )
            rows.append(dict(zip(columns, element, strict=True)))
        elif isinstance(element, dict):
            err = error_from_object(element, url, status)
            if err is not None:
                raise err
            if "columnNames" in element:
                names = element["columnNames"]
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise _shape_error(url, status, f"columnNames is not a list of strings: {names!r}")
                columns = names
            elif "finalMessage" in element:
                break
        else:
            raise _shape_error(
                url, status, f"line {number} is {type(element).__name__}, expected an object or array"
            )
    if columns is None:
        raise _shape_error(url, status, "missing header object (expected one with 'columnNames')")
    return rows


def _split_top_level(schema: str) -> list[str]:
    """Split a schema string on commas that separate columns.

    Commas also appear inside ``STRUCT<...>``, ``DECIMAL(p, s)`` and quoted
    identifiers, so a plain ``split(",")`` would invent columns.
    """
    parts: list[str] = []
    depth = 0
    in_quote = False
    start = 0
    i = 0
    while i < len(schema):
        ch = schema[i]
        if in_quote:
            if ch == "`":
                if i + 1 < len(schema) and schema[i + 1] == "`":
                    i += 1
                else:
                    in_quote = False
        elif ch == "`":
            in_quote = True
        elif ch in "<(":
            depth += 1
        elif ch in ">)":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(schema[start:i])
            start = i + 1
        i += 1
    if in_quote or depth != 0:
        raise ValueError("unbalanced quotes or brackets")
    parts.append(schema[start:])
    return [p.strip() for p in parts if p.strip()]


def _column_names(schema: str) -> list[str]:
    """Column names from a legacy header schema like ``\\`ID\\` STRING KEY, ...``."""
    names = []
    for field in _split_top_level(schema):
        if field.startswith("`"):
            end = 1
            name_chars = []
            while True:
                nxt = field.find("`", end)
                if nxt < 0:
                    raise ValueError(f"unterminated column name in {field!r}")
                name_chars.append(field[end:nxt])
                if field[nxt + 1 : nxt + 2] == "`":
                    name_chars.append("`")
                    end = nxt + 2
                    continue
                break
            names.append("".join(name_chars))
        else:
            names.append(field.split()[0])
    return names


def lookup(row: dict[str, Any], column: str) -> Any:
    """Read a column whatever case ksqlDB chose for its name."""
    if column in row:
        return row[column]
    for key, value in row.items():
        if key.upper() == column.upper():
            return value
    raise KeyError(column)
