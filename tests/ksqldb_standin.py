"""A ksqlDB stand-in: a real HTTP/1.1 server on 127.0.0.1 for the test suite.

No ksqlDB can run on these machines, so tests talk to this server instead,
over real loopback HTTP, and it answers in ksqlDB's documented REST formats
(openfactory-contract.md, section 6). Two ways to use it:

* scripted: ``standin.answer(path, Reply(...))`` or ``standin.routes[path] =
  responder`` makes a route answer exactly what a test needs (error frames,
  stalls, odd shapes), as the ksqlDB client tests do;
* platform: ``standin.serve_platform(topic)`` answers ``GET /info``,
  ``DESCRIBE ASSETS_STREAM EXTENDED`` on ``/ksql`` and pull queries on the
  ``assets``, ``assets_type`` and ``asset_to_uns_map`` tables on ``/query`` from rows the test sets
  (``set_attribute``, ``set_asset_type``, ``set_uns``, ``materialize``), so that an app or
  the CLI can be pointed at it like at a platform's ksqlDB.

Every request is recorded in ``received`` so tests can check what was asked.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "KSQL_TYPE",
    "STATE_SCHEMA",
    "KsqlDBStandIn",
    "Received",
    "Reply",
    "StandInHandler",
    "StandInServer",
    "describe_answer",
    "legacy_query",
    "running_standin",
    "start_server",
    "stop_server",
]

KSQL_TYPE = "application/vnd.ksql.v1+json"
STATE_SCHEMA = "`ID` STRING, `VALUE` STRING, `TYPE` STRING, `TAG` STRING, `TIMESTAMP` STRING"

# The columns of the platform's tables as ksqlDB types them (VALUE is text).
ASSETS_COLUMNS = ("ASSET_UUID", "ID", "VALUE", "TYPE", "TAG", "TIMESTAMP")
ASSETS_TYPE_COLUMNS = ("ASSET_UUID", "TYPE")
UNS_MAP_COLUMNS = ("ASSET_UUID", "UNS_ID")
METRICS_TARGETS_COLUMNS = ("APPLICATION_UUID", "HOST", "PORT", "PATH")


@dataclass
class Received:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any

    @property
    def statement(self) -> str:
        return str(self.body["ksql"])


@dataclass
class Reply:
    """An answer; a list body is sent chunk by chunk (ksqlDB streams /query)."""

    status: int = 200
    body: str | list[str] = ""
    content_type: str = "application/json"

    @classmethod
    def json(cls, doc: Any, status: int = 200) -> Reply:
        return cls(status=status, body=json.dumps(doc))


# A responder either returns a Reply or writes to the handler itself.
Responder = Callable[["StandInHandler", Received], "Reply | None"]


def _error(status: int, error_code: int, message: str, statement: str = "") -> Reply:
    """ksqlDB's error entity (``@type`` ``statement_error`` or ``generic_error``)."""
    kind = "statement_error" if status == 400 else "generic_error"
    return Reply.json(
        {"@type": kind, "error_code": error_code, "message": message, "statementText": statement, "entities": []},
        status=status,
    )


@dataclass
class KsqlDBStandIn:
    """State of one stand-in server: routes, recorded requests, and platform tables."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    routes: dict[str, Responder] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)
    topic: str | None = None
    # asset UUID -> attribute ID -> row of the ``assets`` table (ksqlDB column names)
    assets: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    asset_types: dict[str, str] = field(default_factory=dict)
    uns_map: dict[str, str] = field(default_factory=dict)  # asset UUID -> UNS id (asset_to_uns_map)
    metrics_targets: dict[str, dict[str, Any]] = field(default_factory=dict)  # METRICS_TARGETS rows by UUID
    topics: dict[str, str] = field(default_factory=dict)  # other sources DESCRIBE answers: NAME -> topic
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- scripted use -------------------------------------------------------------

    def answer(self, path: str, reply: Reply) -> None:
        self.routes[path] = lambda _h, _r: reply

    def statements(self, path: str) -> list[str]:
        return [r.statement for r in self.received if r.path == path]

    # -- platform use ---------------------------------------------------------------

    def serve_platform(self, topic: str) -> KsqlDBStandIn:
        """Answer /info, /ksql DESCRIBE and /query from the tables, like a platform's ksqlDB."""
        self.topic = topic
        self.routes["/info"] = lambda _h, _r: Reply.json(
            {"KsqlServerInfo": {"version": "7.7.0", "kafkaClusterId": "standin",
                                "ksqlServiceId": "ofa_", "serverStatus": "RUNNING"}}
        )
        self.routes["/ksql"] = self._ksql
        self.routes["/query"] = self._query
        return self

    def set_attribute(
        self, asset_uuid: str, attr_id: str, value: Any, *, type: str, tag: str, timestamp: str
    ) -> None:
        """Set one row of ``assets``; VALUE is kept as text, as ksqlDB returns it."""
        text = value if isinstance(value, str) or value is None else json.dumps(value)
        with self.lock:
            self.assets.setdefault(asset_uuid, {})[attr_id] = {
                "ASSET_UUID": asset_uuid, "ID": attr_id, "VALUE": text,
                "TYPE": type, "TAG": tag, "TIMESTAMP": timestamp,
            }

    def set_asset_type(self, asset_uuid: str, asset_type: str | None) -> None:
        self._set_row(self.asset_types, asset_uuid, asset_type)

    def set_uns(self, asset_uuid: str, uns_id: str | None) -> None:
        """Map an asset to a UNS id in ``asset_to_uns_map`` (None removes it), as the deployer does."""
        self._set_row(self.uns_map, asset_uuid, uns_id)

    def _set_row(self, table: dict[str, str], asset_uuid: str, value: str | None) -> None:
        with self.lock:
            if value is None:
                table.pop(asset_uuid, None)
            else:
                table[asset_uuid] = value

    def materialize(self, records: Iterable[tuple[bytes | None, bytes | None]]) -> int:
        """Build the tables from raw (key, value) records in log order, as ksqlDB's
        ``assets`` (last value per asset and ID) and ``assets_type`` (last
        ``AssetType``) tables would; returns how many records were applied."""
        applied = 0
        for key, value in records:
            if key is None or value is None:
                continue
            try:
                doc = json.loads(value)
                uuid = key.decode("utf-8")
            except (UnicodeDecodeError, ValueError):
                continue
            if not isinstance(doc, dict) or not isinstance(doc.get("ID"), str):
                continue
            attributes = doc.get("attributes")
            timestamp = attributes.get("timestamp") if isinstance(attributes, dict) else None
            self.set_attribute(uuid, doc["ID"], doc.get("VALUE"), type=str(doc.get("TYPE")),
                               tag=str(doc.get("TAG")), timestamp=str(timestamp))
            if doc["ID"] == "AssetType" and isinstance(doc.get("VALUE"), str):
                self.set_asset_type(uuid, doc["VALUE"])
            applied += 1
        return applied

    def _ksql(self, _h: StandInHandler, received: Received) -> Reply:
        statement = (received.body or {}).get("ksql", "") if isinstance(received.body, dict) else ""
        match = re.fullmatch(r"\s*DESCRIBE\s+([A-Za-z_][A-Za-z0-9_]*)\s+EXTENDED\s*;\s*", statement, re.I)
        if match is None:
            return _error(400, 40001, f"the stand-in only answers DESCRIBE ... EXTENDED, got {statement!r}",
                          statement)
        name = match.group(1).upper()
        topic = self.topic if name == "ASSETS_STREAM" else self.topics.get(name)
        if topic is None:
            return _error(400, 40001, f"{name} does not exist.", statement)
        return Reply.json(describe_answer(name, topic))

    def _query(self, _h: StandInHandler, received: Received) -> Reply:
        statement = received.body.get("ksql", "") if isinstance(received.body, dict) else ""
        try:
            columns, table, conditions = parse_pull_query(statement)
        except ValueError as exc:
            return _error(400, 40001, f"Line: 1, Col: 1: {exc}", statement)
        with self.lock:
            if table == "ASSETS":
                source = [dict(row) for rows in self.assets.values() for row in rows.values()]
                known = ASSETS_COLUMNS
            elif table == "ASSETS_TYPE":
                source = [{"ASSET_UUID": k, "TYPE": v} for k, v in self.asset_types.items()]
                known = ASSETS_TYPE_COLUMNS
            elif table == "METRICS_TARGETS":
                source = [{"APPLICATION_UUID": k, **v} for k, v in self.metrics_targets.items()]
                known = METRICS_TARGETS_COLUMNS
            elif table == "ASSET_TO_UNS_MAP":
                source = [{"ASSET_UUID": k, "UNS_ID": v} for k, v in self.uns_map.items()]
                known = UNS_MAP_COLUMNS
            else:
                return _error(400, 40001, f"Line: 1, Col: 15: {table} does not exist.", statement)
        wanted = list(known if columns == ["*"] else columns)
        for name in wanted + [c for c, _, _ in conditions]:
            if name not in known:
                return _error(400, 40001, f"Column '{name}' cannot be resolved.", statement)
        rows = [
            [row[c] for c in wanted]
            for row in source
            if all((row[c] == value) == (op == "=") for c, op, value in conditions)
        ]
        rows.sort(key=lambda r: json.dumps(r))
        return legacy_query(", ".join(f"`{c}` STRING" for c in wanted), rows)


# -- pull query parsing (the subset the platform's apps send) -----------------------

_QUERY = re.compile(
    r"\s*SELECT\s+(?P<columns>.+?)\s+FROM\s+(?P<table>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?\s*;\s*",
    re.I | re.S,
)
_CONDITION = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=|!=|<>)\s*'((?:[^']|'')*)'\s*", re.S)


def parse_pull_query(statement: str) -> tuple[list[str], str, list[tuple[str, str, str]]]:
    """``SELECT cols FROM table [WHERE c = 'lit' AND c != 'lit' ...];``, literals unquoted.

    Literals are read the way ksqlDB reads them (``''`` is one quote), so a
    test sees whether the client quoted a hostile UUID correctly: a broken
    quote makes the statement unparsable here, as it would there.
    """
    match = _QUERY.fullmatch(statement)
    if match is None:
        raise ValueError(f"cannot parse pull query {statement!r}")
    columns = [c.strip().upper() for c in match.group("columns").split(",")]
    if not all(re.fullmatch(r"[A-Z_][A-Z0-9_]*|\*", c) for c in columns):
        raise ValueError(f"unsupported select list {match.group('columns')!r}")
    conditions: list[tuple[str, str, str]] = []
    where = match.group("where")
    position = 0
    while where is not None:
        cond = _CONDITION.match(where, position)
        if cond is None:
            raise ValueError(f"cannot parse condition at {where[position:]!r}")
        op = "=" if cond.group(2) == "=" else "!="
        conditions.append((cond.group(1).upper(), op, cond.group(3).replace("''", "'")))
        position = cond.end()
        if position == len(where):
            break
        conjunction = re.compile(r"AND\b", re.I).match(where, position)
        if conjunction is None:
            raise ValueError(f"expected AND at {where[position:]!r}")
        position = conjunction.end()
    return columns, match.group("table").upper(), conditions


# -- ksqlDB answer builders (documented REST shapes) --------------------------------


def legacy_query(schema: str, rows: list[list[Any]], extra: Iterable[dict[str, Any]] = ()) -> Reply:
    """HTTP/1.1 /query answer: a JSON array streamed element by element."""
    elements: list[dict[str, Any]] = [{"header": {"queryId": "query_1700000000000", "schema": schema}}]
    elements += [{"row": {"columns": r}} for r in rows]
    elements += list(extra)
    text = "[" + ",\n".join(json.dumps(e) for e in elements) + "]"
    # Split into a few chunks at arbitrary points, as a streaming server would.
    step = max(1, len(text) // 3)
    return Reply(body=[text[i : i + step] for i in range(0, len(text), step)])


def describe_answer(name: str, topic: str) -> list[dict[str, Any]]:
    """``DESCRIBE <name> EXTENDED;`` answer of a JSON-valued stream on ``topic``."""

    def column(col: str, kind: str = "STRING", **extra: Any) -> dict[str, Any]:
        return {"name": col, "schema": {"type": kind, "fields": None, "memberSchema": None}, **extra}

    attributes = {
        "name": "ATTRIBUTES",
        "schema": {"type": "MAP", "fields": None,
                   "memberSchema": {"type": "STRING", "fields": None, "memberSchema": None}},
    }
    return [
        {
            "@type": "sourceDescription",
            "statementText": f"DESCRIBE {name} EXTENDED;",
            "sourceDescription": {
                "name": name,
                "windowType": None,
                "readQueries": [],
                "writeQueries": [],
                "fields": [column("ASSET_UUID", type="KEY"), column("ID"), column("VALUE"), column("TAG"),
                           column("TYPE"), attributes],
                "type": "STREAM",
                "timestamp": "",
                "statistics": "",
                "errorStats": "",
                "extended": True,
                "keyFormat": "KAFKA",
                "valueFormat": "JSON",
                "topic": topic,
                "partitions": 1,
                "replication": 1,
                "statement": f"CREATE STREAM {name} (ASSET_UUID STRING KEY, ID STRING) "
                f"WITH (KAFKA_TOPIC='{topic}', VALUE_FORMAT='JSON');",
                "queryOffsetSummaries": [],
                "sourceConstraints": [],
                "clusterStatistics": [],
                "clusterErrorStats": [],
            },
            "warnings": [],
        }
    ]


# -- the server -----------------------------------------------------------------------


class StandInHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StandInServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self.send_reply(_error(400, 40000, "request body is not JSON"))
            return
        received = Received(self.command, self.path, dict(self.headers.items()), body)
        standin = self.server.standin
        standin.received.append(received)
        responder = standin.routes.get(self.path)
        if responder is None:
            self.send_reply(Reply.json({"message": f"no route {self.path}"}, status=404))
            return
        reply = responder(self, received)
        if reply is not None:
            self.send_reply(reply)

    do_GET = _serve
    do_POST = _serve

    def send_reply(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        if isinstance(reply.body, list):
            # ksqlDB streams /query answers with chunked encoding.
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in reply.body:
                self.write_chunk(piece.encode())
            self.write_chunk(b"")
        else:
            data = reply.body.encode()
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        self.wfile.flush()

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class StandInServer(ThreadingHTTPServer):
    daemon_threads = True
    standin: KsqlDBStandIn

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout tests) leaves a broken pipe behind.
        pass


def start_server(standin: KsqlDBStandIn, port: int = 0) -> tuple[StandInServer, threading.Thread]:
    """Serve ``standin`` on 127.0.0.1 (a free port unless given); sets ``standin.url``."""
    server = StandInServer(("127.0.0.1", port), StandInHandler)
    server.standin = standin
    standin.url = f"http://127.0.0.1:{server.server_address[1]}"
    # A short poll interval keeps shutdown() (and so each test's teardown) fast.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="ksqldb-standin", daemon=True
    )
    thread.start()
    return server, thread


def stop_server(server: StandInServer, thread: threading.Thread, standin: KsqlDBStandIn) -> None:
    standin.release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@contextmanager
def running_standin(topic: str | None = None) -> Iterator[KsqlDBStandIn]:
    """A started stand-in (in platform mode when ``topic`` is given), stopped on exit."""
    standin = KsqlDBStandIn()
    if topic is not None:
        standin.serve_platform(topic)
    server, thread = start_server(standin)
    try:
        yield standin
    finally:
        stop_server(server, thread, standin)
