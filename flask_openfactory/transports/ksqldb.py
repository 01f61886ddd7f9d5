"""A small ksqlDB REST client built on ``requests``.

The platform keeps every asset's current state in ksqlDB tables, and the Kafka
topic we write to is only known through ksqlDB's ``DESCRIBE``. This client
does the few calls an OpenFactory app needs, with three guarantees the
reference client lacks: every interpolated value is quoted, error frames in a
query answer raise instead of being skipped, and answers of an unexpected
shape fail loudly instead of yielding empty results.

It speaks HTTP/1.1 (``requests``), so ``/query`` answers in ksqlDB's legacy
JSON-array format; the newline-delimited HTTP/2 format is parsed as well in
case a proxy in between answers that way.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
import urllib3.exceptions

__all__ = [
    "KsqlDBClient",
    "KsqlDBError",
    "KsqlDBUnavailable",
    "parse_query_answer",
    "quote",
]

_KSQL_MEDIA_TYPE = "application/vnd.ksql.v1+json"
_SNIPPET = 300
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


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


def quote(value: str) -> str:
    """Return ``value`` as a ksqlDB string literal.

    ksqlDB literals escape a quote by doubling it and know no backslash
    escapes, so doubling ``'`` is the whole job; anything else would let a
    UUID containing ``'`` break or extend the statement. NUL is refused
    because no legitimate identifier contains it and it truncates text in
    some layers between us and ksqlDB.
    """
    if not isinstance(value, str):
        raise TypeError(f"quote() needs a str, got {type(value).__name__}")
    if "\x00" in value:
        raise ValueError("a ksqlDB string literal cannot contain NUL")
    return "'" + value.replace("'", "''") + "'"


def _snippet(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _SNIPPET else text[:_SNIPPET] + "..."


def _error_from_object(obj: dict[str, Any], url: str, status: int | None) -> KsqlDBError | None:
    """Recognise ksqlDB's error shapes so none of them can pass as data."""
    inner = obj.get("errorMessage")
    if inner is not None:
        if isinstance(inner, dict):
            return _error_from_object(inner, url, status) or KsqlDBError(
                "ksqlDB reported an error in its answer",
                url=url,
                status=status,
                ksql_message=_snippet(json.dumps(inner)),
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


def _lookup(row: dict[str, Any], column: str) -> Any:
    """Read a column whatever case ksqlDB chose for its name."""
    if column in row:
        return row[column]
    for key, value in row.items():
        if key.upper() == column.upper():
            return value
    raise KeyError(column)


class KsqlDBClient:
    """Client for the ksqlDB REST API used by OpenFactory apps.

    Holds one ``requests.Session`` per process: a forked web worker would
    otherwise share pooled sockets with its parent and interleave bytes on
    them, so a changed pid gets a fresh session and the inherited one is left
    untouched for the parent to use.

    Connection failures are retried a few times with a short backoff (ksqlDB
    restarting, a container not up yet); HTTP errors and read timeouts are
    not, since the server did receive the request and repeating it would
    only repeat the failure or the wait.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 5.0,
        retries: int = 2,
        session_factory: Callable[[], requests.Session] = requests.Session,
        backoff: float = 0.1,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"ksqlDB URL must start with http:// or https://, got {base_url!r}")
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self._session_factory = session_factory
        self._session: requests.Session | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._lock_pid = self._pid

    def __repr__(self) -> str:
        return f"KsqlDBClient({self.base_url!r}, timeout={self.timeout}, retries={self.retries})"

    def __enter__(self) -> KsqlDBClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------

    def _get_session(self) -> requests.Session:
        pid = os.getpid()
        if self._lock_pid != pid:
            # A lock inherited through fork may be held by a thread that no
            # longer exists in this process.
            self._lock = threading.Lock()
            self._lock_pid = pid
        with self._lock:
            if self._session is None or self._pid != pid:
                self._session = self._session_factory()
                self._pid = pid
            return self._session

    def close(self) -> None:
        """Close this process's session; an inherited one belongs to the parent."""
        session, self._session = self._session, None
        if session is not None and self._pid == os.getpid():
            session.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        accept: str = "application/json",
    ) -> requests.Response:
        url = self.base_url + path
        headers = {"Accept": accept}
        data = None
        if body is not None:
            headers["Content-Type"] = f"{_KSQL_MEDIA_TYPE}; charset=utf-8"
            data = json.dumps(body).encode("utf-8")
        attempts = self.retries + 1
        last: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.backoff * (2 ** (attempt - 1)))
            try:
                response = self._get_session().request(
                    method, url, data=data, headers=headers, timeout=(self.timeout, self.timeout)
                )
            except requests.exceptions.ConnectTimeout as exc:
                last = exc
                continue
            except requests.exceptions.Timeout as exc:
                raise KsqlDBUnavailable(
                    f"ksqlDB did not answer {method} {path} within {self.timeout:g} s", url=url
                ) from exc
            except requests.exceptions.ConnectionError as exc:
                # requests reports a read timeout in the body as ConnectionError.
                if any(isinstance(a, urllib3.exceptions.ReadTimeoutError) for a in exc.args):
                    raise KsqlDBUnavailable(
                        f"ksqlDB stopped answering {method} {path} for {self.timeout:g} s", url=url
                    ) from exc
                last = exc
                continue
            except requests.exceptions.RequestException as exc:
                raise KsqlDBError(f"request to ksqlDB failed: {exc}", url=url) from exc
            if not 200 <= response.status_code < 300:
                raise self._http_error(response, method, path)
            return response
        raise KsqlDBUnavailable(
            f"cannot connect to ksqlDB after {attempts} attempt(s); is KSQLDB_URL right and "
            f"the server up? last error: {last}",
            url=url,
        ) from last

    def _http_error(self, response: requests.Response, method: str, path: str) -> KsqlDBError:
        url = response.url or self.base_url + path
        text = response.content.decode("utf-8", errors="replace")
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            doc = None
        if isinstance(doc, dict):
            err = _error_from_object(doc, url, response.status_code)
            if err is not None:
                return err
        return KsqlDBError(
            f"ksqlDB refused {method} {path}",
            url=url,
            status=response.status_code,
            ksql_message=_snippet(text) or None,
        )

    @staticmethod
    def _text(response: requests.Response) -> str:
        # JSON is UTF-8 by definition; requests would otherwise guess the
        # charset from the bytes when ksqlDB sends no charset parameter.
        try:
            return response.content.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise KsqlDBError("ksqlDB answer is not UTF-8 text", url=response.url) from exc

    def _json(self, response: requests.Response, expected: str) -> Any:
        text = self._text(response)
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise KsqlDBError(
                f"expected {expected} from ksqlDB, got text that is not JSON: {_snippet(text)!r}",
                url=response.url,
                status=response.status_code,
            ) from exc

    # -- endpoints ----------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """``GET /info``: the cheapest call that proves the server is up."""
        response = self._request("GET", "/info")
        doc = self._json(response, "a JSON object")
        if not isinstance(doc, dict):
            raise KsqlDBError(
                f"expected a JSON object from /info, got {type(doc).__name__}", url=response.url
            )
        return doc

    def ksql(self, statement: str) -> list[Any]:
        """Run a statement on ``/ksql`` and return ksqlDB's list of entities."""
        if not isinstance(statement, str) or not statement.strip():
            raise ValueError("statement must be a non-empty string")
        response = self._request(
            "POST",
            "/ksql",
            body={"ksql": statement, "streamsProperties": {}},
            accept=_KSQL_MEDIA_TYPE,
        )
        doc = self._json(response, "a JSON array of entities")
        if isinstance(doc, dict):
            err = _error_from_object(doc, response.url, response.status_code)
            if err is not None:
                raise err
        if not isinstance(doc, list):
            raise KsqlDBError(
                f"expected a JSON array of entities from /ksql, got {type(doc).__name__}: "
                f"{_snippet(json.dumps(doc))}",
                url=response.url,
            )
        return doc

    def describe_topic(self, source: str) -> str:
        """Kafka topic behind a stream or table, via ``DESCRIBE ... EXTENDED``.

        ``source`` is an identifier, not a literal, so it cannot be quoted;
        it is restricted to a plain ksqlDB identifier instead.
        """
        if not isinstance(source, str) or not _IDENTIFIER.match(source):
            raise ValueError(f"not a plain ksqlDB stream/table name: {source!r}")
        entities = self.ksql(f"DESCRIBE {source} EXTENDED;")
        first = entities[0] if entities else None
        description = first.get("sourceDescription") if isinstance(first, dict) else None
        topic = description.get("topic") if isinstance(description, dict) else None
        if not isinstance(topic, str) or not topic:
            raise KsqlDBError(
                f"DESCRIBE {source} EXTENDED answered without [0].sourceDescription.topic "
                f"(is {source} a stream or table on this ksqlDB server?): "
                f"{_snippet(json.dumps(entities))}",
                url=self.base_url + "/ksql",
            )
        return topic

    def query(self, sql: str) -> list[dict[str, Any]]:
        """Run a pull query on ``/query``; one dict per row keyed by column name."""
        if not isinstance(sql, str) or not sql.strip():
            raise ValueError("sql must be a non-empty string")
        response = self._request(
            "POST",
            "/query",
            body={"ksql": sql, "streamsProperties": {}},
            accept=_KSQL_MEDIA_TYPE,
        )
        return parse_query_answer(self._text(response), response.url, response.status_code)

    # -- OpenFactory helpers -------------------------------------------------

    def asset_state(self, uuid: str) -> list[dict[str, Any]]:
        """Current attributes of an asset (methods excluded), as ksqlDB returns them."""
        return self.query(
            "SELECT ID, VALUE, TYPE, TAG, TIMESTAMP FROM assets "
            f"WHERE asset_uuid={quote(uuid)} AND TYPE != {quote('Method')};"
        )

    def asset_methods(self, uuid: str) -> dict[str, Any]:
        """Advertised methods of an asset: name -> decoded advertisement.

        ksqlDB hands VALUE back as a string; an advertisement is JSON inside
        it, so it is decoded when it parses and left as text otherwise.
        """
        rows = self.query(
            "SELECT ID, VALUE, TYPE FROM assets "
            f"WHERE asset_uuid={quote(uuid)} AND TYPE={quote('Method')};"
        )
        methods: dict[str, Any] = {}
        for row in rows:
            try:
                name = _lookup(row, "ID")
                value = _lookup(row, "VALUE")
            except KeyError as exc:
                raise KsqlDBError(
                    f"method row lacks column {exc.args[0]}: {row!r}", url=self.base_url + "/query"
                ) from None
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except (ValueError, RecursionError):
                    pass
            methods[str(name)] = value
        return methods

    def asset_type(self, uuid: str) -> str | None:
        """The asset's ``AssetType``, or None when ksqlDB does not know the asset."""
        rows = self.query(f"SELECT TYPE FROM assets_type WHERE ASSET_UUID={quote(uuid)};")
        if not rows:
            return None
        try:
            value = _lookup(rows[0], "TYPE")
        except KeyError:
            raise KsqlDBError(
                f"assets_type row lacks column TYPE: {rows[0]!r}", url=self.base_url + "/query"
            ) from None
        return None if value is None else str(value)


# -- /query answer parsing --------------------------------------------------


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
                url, status, f"expected a JSON array, got invalid JSON: {_snippet(body)!r}"
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
        url, status, f"expected a JSON array or newline-delimited JSON, got {_snippet(body)!r}"
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
        err = _error_from_object(element, url, status)
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
            raise _shape_error(url, status, f"line {number} is not JSON: {_snippet(line)!r}") from None
        if isinstance(element, list):
            if columns is None:
                raise _shape_error(url, status, "a row arrived before the header object")
            if len(element) != len(columns):
                raise _shape_error(
                    url, status, f"line {number} has {len(element)} values for {len(columns)} columns"
                )
            rows.append(dict(zip(columns, element, strict=True)))
        elif isinstance(element, dict):
            err = _error_from_object(element, url, status)
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
