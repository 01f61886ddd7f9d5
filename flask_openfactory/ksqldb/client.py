"""A small ksqlDB REST client built on ``requests``: sessions, retries, the three endpoints.

The platform keeps every asset's current state in ksqlDB tables, and the Kafka
topic we write to is only known through ksqlDB's ``DESCRIBE``. This client
does the few calls an OpenFactory app needs, with three guarantees the
reference client lacks: every interpolated value is quoted (statements.py),
error frames in a query answer raise instead of being skipped (errors.py), and
answers of an unexpected shape fail loudly instead of yielding empty results
(answers.py).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
import urllib3.exceptions

from .answers import parse_query_answer
from .errors import KsqlDBError, KsqlDBUnavailable, error_from_object, snippet
from .state import asset_methods as methods_of
from .state import asset_state as state_of
from .state import asset_type as type_of
from .statements import describe_statement

__all__ = ["KsqlDBClient"]

_KSQL_MEDIA_TYPE = "application/vnd.ksql.v1+json"


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
            err = error_from_object(doc, url, response.status_code)
            if err is not None:
                return err
        return KsqlDBError(
            f"ksqlDB refused {method} {path}",
            url=url,
            status=response.status_code,
            ksql_message=snippet(text) or None,
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
                f"expected {expected} from ksqlDB, got text that is not JSON: {snippet(text)!r}",
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
            err = error_from_object(doc, response.url, response.status_code)
            if err is not None:
                raise err
        if not isinstance(doc, list):
            raise KsqlDBError(
                f"expected a JSON array of entities from /ksql, got {type(doc).__name__}: "
                f"{snippet(json.dumps(doc))}",
                url=response.url,
            )
        return doc

    def describe_topic(self, source: str) -> str:
        """Kafka topic behind a stream or table, via ``DESCRIBE ... EXTENDED``.

        ``source`` is an identifier, not a literal, so it cannot be quoted;
        it is restricted to a plain ksqlDB identifier instead.
        """
        entities = self.ksql(describe_statement(source))
        first = entities[0] if entities else None
        description = first.get("sourceDescription") if isinstance(first, dict) else None
        topic = description.get("topic") if isinstance(description, dict) else None
        if not isinstance(topic, str) or not topic:
            raise KsqlDBError(
                f"DESCRIBE {source} EXTENDED answered without [0].sourceDescription.topic "
                f"(is {source} a stream or table on this ksqlDB server?): "
                f"{snippet(json.dumps(entities))}",
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

    # -- OpenFactory helpers (the platform's state tables: see state.py) ----

    def asset_state(self, uuid: str) -> list[dict[str, Any]]:
        """Current attributes of an asset (methods excluded), as ksqlDB returns them."""
        return state_of(self, uuid)

    def asset_methods(self, uuid: str) -> dict[str, Any]:
        """Advertised methods of an asset: name -> decoded advertisement."""
        return methods_of(self, uuid)

    def asset_type(self, uuid: str) -> str | None:
        """The asset's ``AssetType``, or None when ksqlDB does not know the asset."""
        return type_of(self, uuid)
