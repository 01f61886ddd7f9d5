"""Tests for the ksqlDB REST client against a real loopback HTTP server.

No ksqlDB can run here, so the stand-in server of ``ksqldb_standin`` (shared
with the Kafka integration tests) answers in ksqlDB's documented REST formats.
Every request goes over real HTTP so the client's retry, timeout and parsing
paths are exercised as in production.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from flask_openfactory.ksqldb import (
    KsqlDBClient,
    KsqlDBError,
    KsqlDBUnavailable,
    quote,
)
from ksqldb_standin import (
    KSQL_TYPE,
    STATE_SCHEMA,
    KsqlDBStandIn,
    Received,
    Reply,
    StandInHandler,
    StandInServer,
    describe_answer,
    legacy_query,
    running_standin,
    start_server,
    stop_server,
)

# -- the stand-in server ------------------------------------------------------


@pytest.fixture
def ksqldb() -> Iterator[KsqlDBStandIn]:
    fake = KsqlDBStandIn()
    server, thread = start_server(fake)
    try:
        yield fake
    finally:
        stop_server(server, thread, fake)


@pytest.fixture
def client(ksqldb: KsqlDBStandIn) -> Iterator[KsqlDBClient]:
    c = KsqlDBClient(ksqldb.url, timeout=2.0, retries=2, backoff=0.01)
    try:
        yield c
    finally:
        c.close()


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CountingSession(requests.Session):
    """A real Session that counts the requests it puts on the wire."""

    def __init__(self) -> None:
        super().__init__()
        self.sends = 0

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sends += 1
        return super().send(request, **kwargs)


# -- quoting ------------------------------------------------------------------


def test_quote_doubles_single_quotes() -> None:
    assert quote("O'Brien") == "'O''Brien'"
    assert quote("") == "''"
    assert quote("''") == "''''''"
    assert quote("back\\slash") == "'back\\slash'"  # ksqlDB has no backslash escapes
    assert quote("Zürich-\u6a5f\u68b0") == "'Zürich-\u6a5f\u68b0'"


@pytest.mark.parametrize("bad", [None, 42, b"bytes", ["x"]])
def test_quote_rejects_non_str(bad: Any) -> None:
    with pytest.raises(TypeError):
        quote(bad)


def test_quote_rejects_nul() -> None:
    with pytest.raises(ValueError, match="NUL"):
        quote("a\x00b")


def test_helpers_quote_hostile_uuid(ksqldb: KsqlDBStandIn, client: KsqlDBClient) -> None:
    hostile = "X' OR '1'='1'; DROP STREAM assets_stream; --"
    ksqldb.answer("/query", legacy_query(STATE_SCHEMA, []))

    assert client.asset_state(hostile) == []
    assert client.asset_methods(hostile) == {}
    ksqldb.answer("/query", legacy_query("`TYPE` STRING", []))
    assert client.asset_type(hostile) is None

    q = "'X'' OR ''1''=''1''; DROP STREAM assets_stream; --'"
    assert ksqldb.statements("/query") == [
        f"SELECT ID, VALUE, TYPE, TAG, TIMESTAMP FROM assets WHERE asset_uuid={q} AND TYPE != 'Method';",
        f"SELECT ID, VALUE, TYPE FROM assets WHERE asset_uuid={q} AND TYPE='Method';",
        f"SELECT TYPE FROM assets_type WHERE ASSET_UUID={q};",
    ]


def test_helpers_refuse_nul_before_sending(ksqldb: KsqlDBStandIn, client: KsqlDBClient) -> None:
    with pytest.raises(ValueError):
        client.asset_state("a\x00b")
    assert ksqldb.received == []


# -- endpoints and request format --------------------------------------------


def test_info(ksqldb: KsqlDBStandIn, client: KsqlDBClient) -> None:
    info = {
        "KsqlServerInfo": {
            "version": "7.7.0",
            "kafkaClusterId": "j3tOi6E_RtO_TMH3gBmK7A",
            "ksqlServiceId": "ofa_",
            "serverStatus": "RUNNING",
        }
    }
    ksqldb.answer("/info", Reply.json(info))
    assert client.info() == info
    assert [(r.method, r.path) for r in ksqldb.received] == [("GET", "/info")]


def test_ksql_request_format(ksqldb: KsqlDBStandIn, client: KsqlDBClient) -> None:
    answer = [{"@type": "streams", "statementText": "SHOW STREAMS;", "streams": [], "warnings": []}]
    ksqldb.answer("/ksql", Reply.json(answer))
    assert client.ksql("SHOW STREAMS;") == answer
    (req,) = ksqldb.received
    assert req.method == "POST"
    assert req.body == {"ksql": "SHOW STREAMS;", "streamsProperties": {}}
    assert req.headers["Accept"] == KSQL_TYPE


def test_describe_topic(ksqldb: KsqlDBStandIn, client: KsqlDBClient) -> None:
    ksqldb.answer("/ksql", Reply.json(describe_answer("ASSETS_STREAM", "ofa_assets")))
    assert client.describe_topic("ASSETS_STREAM") == "ofa_assets"
    assert ksqldb.statements("/ksql") == ["DESCRIBE ASSETS_STREAM EXTENDED;"]


def test_describe_topic_without_topic_is_a_clear_error(ksqldb: KsqlDBStandIn, client: KsqlDBClient) -> None:
    answer = describe_answer("ASSETS_STREAM", "x")
    del answer[0]["sourceDescription"]["topic"]
    ksqldb.answer("/ksql", Reply.json(answer))
    with pytest.raises(KsqlDBError, match=r"sourceDescription\.topic") as info:
        client.describe_topic("ASSETS_STREAM")
    assert ksqldb.url in str(info.value)


def test_describe_topic_rejects_non_identifier(ksqldb: KsqlDBStandIn, client: KsqlDBClient) -> None:
    with pytest.raises(ValueError):
        client.describe_topic("assets; DROP STREAM x")
    assert ksqldb.received == []


def test_ksql_statement_error_400(ksqldb: KsqlDBStandIn, client: KsqlDBClient) -> None:
    ksqldb.answer(
        "/ksql",
        Reply.json(
            {
                "@type": "statement_error",
                "error_code": 40001,
                "message": "ASSETS_STREAMX does not exist.",
                "statementText": "DESCRIBE ASSETS_STREAMX EXTENDED;",
                "entities": [],
            },
            status=400,
        ),
    )
    with pytest.raises(KsqlDBError) as info:
        client.describe_topic("ASSETS_STREAMX")
    err = info.value
    assert not isinstance(err, KsqlDBUnavailable)
    assert err.status == 400 and err.error_code == 40001
    text = str(err)
    assert "40001" in text and "ASSETS_STREAMX does not exist." in text and ksqldb.url in text
    assert len(ksqldb.received) == 1  # a 4xx is never retried


def test_server_error_is_not_retried(ksqldb: KsqlDBStandIn, client: KsqlDBClient) -> None:
    ksqldb.answer("/query", Reply(status=503, body="upstream unavailable", content_type="text/plain"))
    with pytest.raises(KsqlDBError, match="upstream unavailable") as info:
        client.query("SELECT * FROM assets;")
    assert info.value.status == 503
    assert len(ksqldb.received) == 1


# -- /query parsing -----------------------------------------------------------


def test_query_legacy_rows(ksqldb: KsqlDBStandIn, client: KsqlDBClient) -> None:
    rows = [
        ["avail", "AVAILABLE", "Events", "Availability", "2026-05-04T12:34:56.789Z"],
        ["temp", "21.5", "Samples", "Temperature", "2026-05-04T12:34:57.001Z"],
        ["note", None, "Events", "Note", "UNAVAILABLE"],
    ]
    ksqldb.answer("/query", legacy_query(STATE_SCHEMA, rows))
    result = client.asset_state("PROVER3018")
    assert result == [dict(zip(["ID", "VALUE", "TYPE", "TAG", "TIMESTAMP"], r, strict=True)) for r in rows]
    (req,) = ksqldb.received
    assert req.body["streamsProperties"] == {}
    assert req.headers["Accept"] == KSQL_TYPE


def test_query_legacy_complex_schema(ksqldb: KsqlDBStandIn, client: KsqlDBClient) -> None:
    schema = (
        "`ASSET_UUID` STRING KEY, `READINGS` ARRAY<STRUCT<`ID` STRING, `VALUE` STRING>>, "
        "`PRICE` DECIMAL(10, 2), `ODD``NAME` STRING"
    )
    row = ["A1", [{"ID": "x", "VALUE": "1"}], 1.5, "q"]
    ksqldb.answer("/query", legacy_query(schema, [row]))
    assert client.query("SELECT * FROM t;") == [
        {"ASSET_UUID": "A1", "READINGS": [{"ID": "x", "VALUE": "1"}], "PRICE": 1.5, "ODD`NAME": "q"}
    ]


def test_query_final_message_ends_answer(ksqldb: KsqlDBStandIn, client: KsqlDBClient) -> None:
    ksqldb.answer(
        "/query",
        legacy_query("`ID` STRING", [["a"]], extra=[{"finalMessage": "Query Completed"}]),
    )
    assert client.query("SELECT ID FROM t;") == [{"ID": "a"}]


def test_query_error_message_element_raises(ksqldb: KsqlDBStandIn, client: KsqlDBClient) -> None:
    error = {
        "errorMessage": {
            "@type": "generic_error",
            "error_code": 50000,
            "message": "Pull query failed: store not available",
        }
    }
    ksqldb.answer("/query", legacy_query("`ID` STRING", [["a"]], extra=[error]))
    with pytest.raises(KsqlDBError, match="store not available") as info:
        client.query("SELECT ID FROM t;")
    assert info.value.error_code == 50000
    assert info.value.status == 200


def test_query_statement_error_400(ksqldb: KsqlDBStandIn, client: KsqlDBClient) -> None:
    ksqldb.answer(
        "/query",
        Reply.json(
            {
                "@type": "statement_error",
                "error_code": 40001,
                "message": "Line: 1, Col: 15: ASSETZ does not exist.",
                "statementText": "SELECT * FROM assetz;",
                "entities": [],
            },
            status=400,
        ),
    )
    with pytest.raises(KsqlDBError, match="ASSETZ does not exist") as info:
        client.query("SELECT * FROM assetz;")
    assert info.value.error_code == 40001
    assert len(ksqldb.received) == 1


def test_query_http2_delimited_format(ksqldb: KsqlDBStandIn, client: KsqlDBClient) -> None:
    body = "\n".join(
        [
            json.dumps(
                {"queryId": "q1", "columnNames": ["ID", "VALUE"], "columnTypes": ["STRING", "STRING"]}
            ),
            json.dumps(["avail", "AVAILABLE"]),
            json.dumps(["x", "1"]),
        ]
    )
    ksqldb.answer("/query", Reply(body=body + "\n", content_type="application/vnd.ksqlapi.delimited.v1"))
    assert client.query("SELECT ID, VALUE FROM assets;") == [
        {"ID": "avail", "VALUE": "AVAILABLE"},
        {"ID": "x", "VALUE": "1"},
    ]


def test_query_http2_error_line_raises(ksqldb: KsqlDBStandIn, client: KsqlDBClient) -> None:
    body = "\n".join(
        [
            json.dumps({"queryId": "q1", "columnNames": ["ID"], "columnTypes": ["STRING"]}),
            json.dumps(["a"]),
            json.dumps({"@type": "generic_error", "error_code": 50000, "message": "boom"}),
        ]
    )
    ksqldb.answer("/query", Reply(body=body))
    with pytest.raises(KsqlDBError, match="boom"):
        client.query("SELECT ID FROM t;")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(body="<html>Bad gateway</html>", content_type="text/html"), "not JSON|JSON array"),
        (Reply.json({"unexpected": True}), "header"),
        (Reply.json([]), "missing header"),
        (Reply.json([{"row": {"columns": ["a"]}}]), "before the header"),
        (Reply.json([{"header": {"queryId": "q"}}]), "schema"),
        (Reply.json(["just a string"]), "expected an object"),
        (Reply.json([{"header": {"schema": "`A` STRING"}}, {"row": {"columns": ["a", "b"]}}]), "2 values for 1"),
        (Reply(body="[{\"header\": "), "invalid JSON"),
        (Reply(body=""), "empty body"),
    ],
)
def test_query_unexpected_shapes(
    ksqldb: KsqlDBStandIn, client: KsqlDBClient, reply: Reply, expected: str
) -> None:
    ksqldb.answer("/query", reply)
    with pytest.raises(KsqlDBError, match=expected) as info:
        client.query("SELECT * FROM t;")
    assert ksqldb.url in str(info.value)


def test_ksql_answer_must_be_a_list(ksqldb: KsqlDBStandIn, client: KsqlDBClient) -> None:
    ksqldb.answer("/ksql", Reply.json({"hello": "world"}))
    with pytest.raises(KsqlDBError, match="expected a JSON array"):
        client.ksql("SHOW STREAMS;")


def test_asset_methods_decodes_json_values(ksqldb: KsqlDBStandIn, client: KsqlDBClient) -> None:
    advert = {"description": "Move", "arguments": [{"name": "x", "description": "mm"}]}
    ksqldb.answer(
        "/query",
        legacy_query(
            "`ID` STRING, `VALUE` STRING, `TYPE` STRING",
            [["move", json.dumps(advert), "Method"], ["legacy", "not json", "Method"]],
        ),
    )
    assert client.asset_methods("APP") == {"move": advert, "legacy": "not json"}


def test_asset_type(ksqldb: KsqlDBStandIn, client: KsqlDBClient) -> None:
    ksqldb.answer("/query", legacy_query("`TYPE` STRING", [["OpenFactoryApp"]]))
    assert client.asset_type("APP") == "OpenFactoryApp"
    ksqldb.answer("/query", legacy_query("`TYPE` STRING", []))
    assert client.asset_type("UNKNOWN") is None


# -- availability: timeouts, refused connections, retries ---------------------


def test_stalled_answer_times_out(ksqldb: KsqlDBStandIn) -> None:
    def stall(_h: StandInHandler, _r: Received) -> Reply:
        ksqldb.release.wait(timeout=10)
        return Reply.json([])

    ksqldb.routes["/query"] = stall
    session = CountingSession()
    with KsqlDBClient(ksqldb.url, timeout=0.3, retries=2, session_factory=lambda: session) as c:
        start = time.monotonic()
        with pytest.raises(KsqlDBUnavailable, match="did not answer") as info:
            c.query("SELECT * FROM assets;")
        elapsed = time.monotonic() - start
    ksqldb.release.set()
    assert 0.25 <= elapsed < 2.0
    assert session.sends == 1  # a read timeout is not retried
    assert ksqldb.url in str(info.value)


def test_stall_in_the_middle_of_the_body_times_out(ksqldb: KsqlDBStandIn) -> None:
    def half_then_stall(h: StandInHandler, _r: Received) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        h.write_chunk(b'[{"header":{"queryId":"q","schema":"`ID` STRING"}},\n')
        ksqldb.release.wait(timeout=10)

    ksqldb.routes["/query"] = half_then_stall
    session = CountingSession()
    with KsqlDBClient(ksqldb.url, timeout=0.3, retries=2, session_factory=lambda: session) as c:
        start = time.monotonic()
        with pytest.raises(KsqlDBUnavailable, match="stopped answering"):
            c.query("SELECT ID FROM t;")
        assert time.monotonic() - start < 2.0
    ksqldb.release.set()
    # requests reports this as a ConnectionError; it must still count as a timeout.
    assert session.sends == 1


@pytest.mark.parametrize("retries", [0, 2])
def test_connection_refused_retries_then_unavailable(retries: int) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    session = CountingSession()
    client = KsqlDBClient(url, timeout=1.0, retries=retries, backoff=0.05, session_factory=lambda: session)
    start = time.monotonic()
    with pytest.raises(KsqlDBUnavailable, match="cannot connect") as info:
        client.info()
    elapsed = time.monotonic() - start
    assert session.sends == retries + 1
    assert url in str(info.value)
    # backoff 0.05 then 0.1: bounded and short.
    assert elapsed < 2.0
    if retries == 2:
        assert elapsed >= 0.15


def test_retry_recovers_when_server_comes_up() -> None:
    port = _closed_port()
    fake = KsqlDBStandIn()
    fake.answer("/info", Reply.json({"KsqlServerInfo": {"serverStatus": "RUNNING"}}))
    started: list[tuple[StandInServer, threading.Thread]] = []

    class StartServerOnRefusal(CountingSession):
        """Brings the server up after the first refused attempt, like a slow container."""

        def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
            try:
                return super().send(request, **kwargs)
            except requests.exceptions.ConnectionError:
                if not started:
                    started.append(start_server(fake, port))
                raise

    session = StartServerOnRefusal()
    try:
        client = KsqlDBClient(
            f"http://127.0.0.1:{port}", retries=2, backoff=0.01, session_factory=lambda: session
        )
        assert client.info()["KsqlServerInfo"]["serverStatus"] == "RUNNING"
        assert session.sends == 2
        assert len(fake.received) == 1
    finally:
        for server, thread in started:
            stop_server(server, thread, fake)


# -- sessions -------------------------------------------------------------------


def test_one_session_reused_and_recreated_after_close(ksqldb: KsqlDBStandIn) -> None:
    sessions: list[CountingSession] = []

    def factory() -> CountingSession:
        sessions.append(CountingSession())
        return sessions[-1]

    ksqldb.answer("/info", Reply.json({"KsqlServerInfo": {}}))
    client = KsqlDBClient(ksqldb.url, session_factory=factory)
    assert sessions == []  # nothing is opened before the first call
    client.info()
    client.info()
    assert len(sessions) == 1 and sessions[0].sends == 2
    client.close()
    client.info()
    assert len(sessions) == 2
    client.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_its_own_session(ksqldb: KsqlDBStandIn) -> None:
    sessions: list[CountingSession] = []

    def factory() -> CountingSession:
        sessions.append(CountingSession())
        return sessions[-1]

    ksqldb.answer("/info", Reply.json({"KsqlServerInfo": {}}))
    client = KsqlDBClient(ksqldb.url, session_factory=factory)
    client.info()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report, then leave without running pytest's teardown
        code = 1
        try:
            client.info()
            client.close()
            report = {
                "sessions": len(sessions),
                "inherited_sends": sessions[0].sends,
                "own_sends": sessions[-1].sends,
            }
            os.write(write_fd, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert json.loads(data) == {"sessions": 2, "inherited_sends": 1, "own_sends": 1}
    # The parent's session is intact and still in use.
    client.info()
    assert len(sessions) == 1 and sessions[0].sends == 2
    client.close()


def test_constructor_validates_arguments() -> None:
    with pytest.raises(ValueError):
        KsqlDBClient("localhost:8088")
    with pytest.raises(ValueError):
        KsqlDBClient("http://x", timeout=0)
    with pytest.raises(ValueError):
        KsqlDBClient("http://x", retries=-1)


# -- the stand-in in platform mode (what the Kafka integration tests rely on) -----


def test_platform_mode_answers_the_client_helpers_from_its_tables() -> None:
    hostile = "X' OR '1'='1"
    with running_standin("ofa_assets_test") as standin:
        standin.set_attribute("APP-1", "avail", "AVAILABLE", type="Events", tag="Availability",
                              timestamp="2026-05-04T12:34:56.789Z")
        standin.set_attribute("APP-1", "temp", 21.5, type="Samples", tag="Temperature",
                              timestamp="2026-05-04T12:34:57.001Z")
        advert = {"description": "Move", "arguments": [{"name": "x", "description": "mm"}]}
        standin.set_attribute("APP-1", "move", json.dumps(advert), type="Method", tag="Method",
                              timestamp="2026-05-04T12:34:57.002Z")
        standin.set_attribute(hostile, "avail", "UNAVAILABLE", type="Events", tag="Availability",
                              timestamp="2026-05-04T12:34:58.000Z")
        standin.set_asset_type("APP-1", "OpenFactoryApp")
        with KsqlDBClient(standin.url, timeout=2.0) as client:
            assert client.info()["KsqlServerInfo"]["serverStatus"] == "RUNNING"
            assert client.describe_topic("ASSETS_STREAM") == "ofa_assets_test"
            assert client.asset_state("APP-1") == [
                {"ID": "avail", "VALUE": "AVAILABLE", "TYPE": "Events", "TAG": "Availability",
                 "TIMESTAMP": "2026-05-04T12:34:56.789Z"},
                {"ID": "temp", "VALUE": "21.5", "TYPE": "Samples", "TAG": "Temperature",
                 "TIMESTAMP": "2026-05-04T12:34:57.001Z"},
            ]
            assert client.asset_methods("APP-1") == {"move": advert}
            assert client.asset_type("APP-1") == "OpenFactoryApp"
            assert client.asset_type("APP-2") is None
            # Quoted correctly, the hostile UUID selects exactly its own rows.
            assert [r["VALUE"] for r in client.asset_state(hostile)] == ["UNAVAILABLE"]
            with pytest.raises(KsqlDBError, match="does not exist") as info:
                client.describe_topic("OTHER_STREAM")
            assert info.value.error_code == 40001


def test_platform_mode_materializes_raw_records_like_ksqldb() -> None:
    def value(attr: str, v: Any, kind: str = "Events") -> bytes:
        return json.dumps({"ID": attr, "VALUE": v, "TAG": "T", "TYPE": kind,
                           "attributes": {"timestamp": "2026-05-04T12:00:00.000Z"}}).encode()

    with running_standin("t") as standin:
        applied = standin.materialize([
            (b"A", value("avail", "AVAILABLE")), (b"A", value("avail", "UNAVAILABLE")),
            (b"A", value("AssetType", "OpenFactoryApp", "OpenFactory")), (b"A", None), (None, b"{}"),
            (b"B", b"not json"),
        ])
        assert applied == 3
        with KsqlDBClient(standin.url, timeout=2.0) as client:
            rows = {r["ID"]: r["VALUE"] for r in client.asset_state("A")}
            assert rows == {"avail": "UNAVAILABLE", "AssetType": "OpenFactoryApp"}
            assert client.asset_type("A") == "OpenFactoryApp"
            assert client.asset_state("B") == []
