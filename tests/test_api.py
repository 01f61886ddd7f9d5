"""The HTTP API under /ofa: routes, errors, OpenAPI document, docs, coexistence.

Every app here is built by ``make_app`` on its own in-memory log, the way an
app factory runs once per test; the runtime is started and stopped per app.
"""

from __future__ import annotations

import enum
import io
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

import marshmallow as ma
import pytest
from flask import Flask, abort
from flask.testing import FlaskClient
from flask_smorest import Api
from flask_smorest import Blueprint as SmorestBlueprint
from werkzeug.exceptions import HTTPException
from werkzeug.test import TestResponse

from app_factory import build_app
from flask_openfactory import AssetBlueprint, SampleAttribute, TransportError
from flask_openfactory.api import correlation_id_from_request
from flask_openfactory.testing import runtime_of
from flask_openfactory.transports.memory import memory_log
from flask_openfactory.wire.protocol import Record

# -- the asset under test: declared at module level, registered on every app ------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


machine = AssetBlueprint("machine", __name__)
spindle_speed = machine.attribute(SampleAttribute("spindle_speed", tag="Spindle.Speed", default=0))


@machine.ofa_method()
def move_axis(x: float, y: float, speed: int = 100) -> dict[str, Any]:
    """Move the axis to (x, y)."""
    return {"x": x, "y": y, "speed": speed}


@machine.ofa_method()
def home() -> str:
    """Go to the home position."""
    return "homed"


@machine.ofa_method()
def explode() -> None:
    """Always fails."""
    raise RuntimeError("spindle jammed")


@machine.ofa_method(description="Set the feed rate.")
def set_feed(rate: Annotated[int, "feed rate in mm/min"]) -> int:
    return rate


@machine.ofa_method(param_description={"on": "coolant on or off"})
def coolant(on: bool, note: str | None = None) -> dict[str, Any]:
    """Switch the coolant."""
    return {"on": on, "note": note}


@machine.ofa_method()
def configure(
    mode: Literal["auto", "manual"] = "auto",
    color: Color = Color.RED,
    points: list[float] | None = None,
    extra=None,  # unannotated: any JSON value
) -> dict[str, Any]:
    """Exercise the remaining parameter kinds."""
    return {"mode": mode, "color": color.value, "points": points, "extra": extra}


MACHINE_METHODS = ["move_axis", "home", "explode", "set_feed", "coolant", "configure"]


# -- fixtures ---------------------------------------------------------------------------


def host_routes(app: Flask) -> None:
    """The host app's own routes, added before the extension."""

    @app.route("/")
    def index() -> str:
        return "host index"

    @app.route("/upload", methods=["POST"])
    def upload() -> str:
        from flask import request

        return str(len(request.get_data()))

    @app.route("/broken")
    def broken() -> str:
        abort(400)


def make_app(**config: Any) -> Flask:
    """An app factory, as a host app would write it."""
    return build_app(
        __name__,
        {
            "TESTING": True,
            "OPENFACTORY_TRANSPORT_URL": f"memory://test-api-{uuid.uuid4().hex}",
            "OPENFACTORY_APP_UUID": "TEST-ASSET",
            "OPENFACTORY_APPLICATION_VERSION": "1.2.3",
            **config,
        },
        before_extension=host_routes,
        blueprints=[machine],
    )


@pytest.fixture
def started_apps() -> Iterator[list[Flask]]:
    """Apps whose runtimes get stopped at teardown, whatever the test did."""
    apps: list[Flask] = []
    yield apps
    for app in apps:
        runtime_of(app).stop(timeout=2.0)


@pytest.fixture
def build(started_apps: list[Flask]) -> Callable[..., Flask]:
    def build(start: bool = True, **config: Any) -> Flask:
        app = make_app(**config)
        started_apps.append(app)
        if start:
            runtime_of(app).start()
        return app

    return build


@pytest.fixture
def app(build: Callable[..., Flask]) -> Flask:
    return build()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def assert_json_error(response: TestResponse, code: int) -> dict[str, Any]:
    """A JSON error of our format, never HTML and never a 5xx from bad input."""
    assert response.status_code == code, response.get_data(as_text=True)
    assert response.mimetype == "application/json", response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == code
    assert isinstance(body["status"], str) and body["status"]
    assert isinstance(body["message"], str) and body["message"]
    assert set(body) <= {"code", "status", "message", "errors"}
    return body  # type: ignore[no-any-return]


SINCE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def without_since(body: dict[str, Any]) -> dict[str, Any]:
    """A readiness answer without the times (checked on their own): every check has one."""
    assert all(SINCE.fullmatch(check["since"]) for check in body["checks"].values()), body
    return {**body, "checks": {n: {k: v for k, v in c.items() if k != "since"} for n, c in body["checks"].items()}}


def published(app: Flask, attr_id: str) -> Record | None:
    """What the asset's log holds now (the runtime's own view follows it asynchronously)."""
    log = memory_log(app.config["OPENFACTORY_TRANSPORT_URL"].split("://", 1)[1])
    with log.changed:
        return log.state.get(runtime_of(app).asset_uuid, {}).get(attr_id)


def published_result(app: Flask, method: str) -> dict[str, Any]:
    record = published(app, f"{method}_RESULT")
    assert record is not None, f"{method}_RESULT was not published"
    assert record.type == "OpenFactory" and record.tag == "Method.Result"
    assert isinstance(record.value, str)
    return json.loads(record.value)  # type: ignore[no-any-return]


# -- fixed routes -------------------------------------------------------------------------


def test_health(client: FlaskClient) -> None:
    response = client.get("/ofa/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "alive", "asset_uuid": "TEST-ASSET", "pid": os.getpid()}
    assert client.head("/ofa/health").status_code == 200


def test_health_never_touches_the_transport(build: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    app = build(start=False, OPENFACTORY_START_ON_REQUEST=False)

    def no_transport(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("liveness must not create a transport")

    monkeypatch.setattr("flask_openfactory.runtime.core.create_transport", no_transport)
    response = app.test_client().get("/ofa/health")
    assert response.status_code == 200
    assert response.get_json()["status"] == "alive"


def test_ready_when_started(client: FlaskClient) -> None:
    response = client.get("/ofa/ready")
    assert response.status_code == 200
    body = response.get_json()
    assert body["ready"] is True
    assert {k: v for k, v in body["checks"]["runtime"].items() if k != "since"} == {"ok": True, "detail": "started"}
    assert body["checks"]["transport"]["ok"] is True
    assert all(set(check) == {"ok", "detail", "since"} for check in body["checks"].values())
    assert all(SINCE.fullmatch(check["since"]) for check in body["checks"].values())


def test_not_ready_before_start(build: Callable[..., Flask]) -> None:
    app = build(start=False, OPENFACTORY_START_ON_REQUEST=False)
    response = app.test_client().get("/ofa/ready")
    assert response.status_code == 503
    body = response.get_json()
    assert without_since(body) == {
        "ready": False,
        "checks": {
            "runtime": {"ok": False, "detail": "not started in this process"},
            "transport": {"ok": False, "detail": "not connected in this process"},
        },
    }
    # "since when": stable while the state does not change
    assert app.test_client().get("/ofa/ready").get_json() == body


def test_a_failing_readiness_check_is_503_not_500(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> tuple[bool, dict[str, Any]]:
        raise TransportError("health probe failed")

    monkeypatch.setattr(runtime_of(app), "readiness", broken)
    with caplog.at_level(logging.CRITICAL, logger="flask_openfactory"):
        response = client.get("/ofa/ready")
    assert response.status_code == 503
    assert without_since(response.get_json()) == {
        "ready": False,
        "checks": {"readiness": {"ok": False, "detail": "TransportError: health probe failed"}},
    }


def test_attributes(app: Flask, client: FlaskClient) -> None:
    runtime = runtime_of(app)
    response = client.get("/ofa/attributes")
    assert response.status_code == 200
    body = response.get_json()
    assert body == [r.as_dict() for r in runtime.records()]
    ids = {item["id"] for item in body}
    assert {"avail", "application_version", "spindle_speed", "AssetType"} <= ids
    assert not ids & set(MACHINE_METHODS)  # advertisements are not attributes

    samples = client.get("/ofa/attributes", query_string={"type": "Samples"}).get_json()
    record = runtime.get("spindle_speed")
    assert record is not None
    assert samples == [
        {"id": "spindle_speed", "value": 0, "tag": "Spindle.Speed", "type": "Samples", "timestamp": record.timestamp}
    ]
    events = client.get("/ofa/attributes?type=Events").get_json()
    assert events and {item["type"] for item in events} == {"Events"}


def test_attributes_rejects_an_unknown_type(client: FlaskClient) -> None:
    response = client.get("/ofa/attributes?type=Method")
    assert assert_json_error(response, 422) == {
        "code": 422,
        "status": "Unprocessable Entity",
        "message": "Invalid request: see 'errors'",
        "errors": {"query": {"type": ["Must be one of: Samples, Events, Condition, OpenFactory."]}},
    }


def test_one_attribute(app: Flask, client: FlaskClient) -> None:
    spindle_speed_record = runtime_of(app).get("spindle_speed")
    assert spindle_speed_record is not None
    response = client.get("/ofa/attributes/spindle_speed")
    assert response.status_code == 200
    assert response.get_json() == spindle_speed_record.as_dict()
    assert client.get("/ofa/attributes/avail").get_json()["value"] == "AVAILABLE"


def test_unknown_attribute_and_method_advertisement_are_404(client: FlaskClient) -> None:
    assert assert_json_error(client.get("/ofa/attributes/nope"), 404) == {
        "code": 404,
        "status": "Not Found",
        "message": "asset 'TEST-ASSET' has no attribute 'nope'",
    }
    assert_json_error(client.get("/ofa/attributes/move_axis"), 404)


def test_transport_failure_is_503_not_500(app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable() -> list[Any]:
        raise TransportError("kafka://broker:9092 is unreachable")

    monkeypatch.setattr(runtime_of(app), "records", unreachable)
    assert assert_json_error(client.get("/ofa/attributes"), 503)["message"] == "kafka://broker:9092 is unreachable"


def test_method_contracts(client: FlaskClient) -> None:
    response = client.get("/ofa/methods")
    assert response.status_code == 200
    contracts = {c["name"]: c for c in response.get_json()}
    assert list(contracts) == MACHINE_METHODS
    assert contracts["move_axis"] == {
        "name": "move_axis",
        "description": "Move the axis to (x, y).",
        "signature": "move_axis(x: float, y: float, speed: int = 100)",
        "url": "/ofa/methods/move_axis",
        "arguments": [
            {"name": "x", "type": "float", "required": True, "default": None, "description": ""},
            {"name": "y", "type": "float", "required": True, "default": None, "description": ""},
            {"name": "speed", "type": "int", "required": False, "default": 100, "description": ""},
        ],
    }
    assert contracts["set_feed"]["description"] == "Set the feed rate."
    assert contracts["set_feed"]["arguments"] == [
        {"name": "rate", "type": "int", "required": True, "default": None, "description": "feed rate in mm/min"}
    ]
    assert contracts["coolant"]["arguments"][0]["description"] == "coolant on or off"
    assert contracts["coolant"]["arguments"][1] == {
        "name": "note", "type": "str | None", "required": False, "default": None, "description": ""
    }
    assert contracts["configure"]["arguments"][1]["default"] == "red"  # enum default by value
    assert contracts["home"]["arguments"] == []


# -- calling methods --------------------------------------------------------------------------


def test_call_a_method(app: Flask, client: FlaskClient) -> None:
    response = client.post("/ofa/methods/move_axis", json={"x": 1, "y": 2.5})
    assert response.status_code == 200
    body = response.get_json()
    cid = body.pop("correlation_id")
    assert uuid.UUID(cid)
    assert isinstance(body.pop("duration_ms"), float)
    assert body == {
        "method": "move_axis",
        "sender_uuid": "http",
        "status": "OK",
        "result": {"x": 1.0, "y": 2.5, "speed": 100},
        "error": None,
    }
    assert response.headers["X-Correlation-ID"] == cid
    published = published_result(app, "move_axis")
    assert published["correlation_id"] == cid
    assert published["status"] == "OK"
    assert published["result"] == {"x": 1.0, "y": 2.5, "speed": 100}


def test_float_parameters_take_json_integers(client: FlaskClient) -> None:
    body = client.post("/ofa/methods/move_axis", json={"x": 1, "y": 2, "speed": 5}).get_json()
    assert body["result"] == {"x": 1.0, "y": 2.0, "speed": 5}
    assert isinstance(body["result"]["x"], float)


def test_correlation_id_and_sender_headers(app: Flask, client: FlaskClient) -> None:
    cid = str(uuid.uuid4())
    response = client.post(
        "/ofa/methods/home",
        headers={"X-Correlation-ID": cid.upper(), "X-OpenFactory-Sender": "CALLER-UUID"},
    )
    assert response.status_code == 200
    body = response.get_json()
    assert (body["correlation_id"], body["sender_uuid"], body["result"]) == (cid, "CALLER-UUID", "homed")
    assert published_result(app, "home")["correlation_id"] == cid


CID = "5f0c6a1e-9b7d-4c3e-8a2f-1d6e4b9c7a05"


@pytest.mark.parametrize(
    ("sent", "answered"),
    [
        (CID, CID),
        ("5F0C6A1E-9b7d-4C3E-8a2f-1D6E4B9C7A05", CID),
        (f" {CID}\t", CID),  # spaces and tabs around a field value are not part of it (RFC 9110)
        ("00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000"),
    ],
    ids=["lower", "mixed-case", "surrounding-space", "nil"],
)
def test_correlation_id_in_canonical_form_is_taken_in_lower_case(
    app: Flask, client: FlaskClient, sent: str, answered: str
) -> None:
    response = client.post("/ofa/methods/home", headers={"X-Correlation-ID": sent})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["correlation_id"] == answered
    assert response.headers["X-Correlation-ID"] == answered
    assert published_result(app, "home")["correlation_id"] == answered


def test_without_a_correlation_id_the_server_makes_one(app: Flask, client: FlaskClient) -> None:
    response = client.post("/ofa/methods/home")
    cid = response.get_json()["correlation_id"]
    assert str(uuid.UUID(cid)) == cid and response.headers["X-Correlation-ID"] == cid
    assert published_result(app, "home")["correlation_id"] == cid


@pytest.mark.parametrize(
    "sent",
    [
        "",
        "   ",
        "not-a-uuid",
        CID.replace("-", ""),
        "{" + CID + "}",
        "urn:uuid:" + CID,
        CID + "0",
        CID[:-1],
        CID.replace("a", "g", 1),
        CID.replace("-", " ", 1),
        f"{CID}, {CID}",  # the header twice, as a server joins them
        "5f0c6a1e_9b7d_4c3e_8a2f_1d6e4b9c7a05",
    ],
    ids=["empty", "blank", "text", "no-hyphens", "braces", "urn", "too-long", "too-short", "not-hex",
         "space", "twice", "underscores"],
)
def test_any_other_correlation_id_is_400_and_nothing_runs(app: Flask, client: FlaskClient, sent: str) -> None:
    response = client.post("/ofa/methods/home", headers={"X-Correlation-ID": sent})
    body = assert_json_error(response, 400)
    expected = ("a UUID in canonical form, 8-4-4-4-12 hex digits (550e8400-e29b-41d4-a716-446655440000), "
                "or no header at all")
    assert body == {
        "code": 400,
        "status": "Bad Request",
        "message": f"X-Correlation-ID must be {expected}; got {sent[:64]!r}",
        "errors": {"headers": {"X-Correlation-ID": [f"Must be {expected}."]}},
    }
    assert published(app, "home_RESULT") is None  # the method never ran


def test_correlation_id_from_request_outside_the_method_route(app: Flask) -> None:
    """The one parser of the header, usable by any view of the API."""
    with app.test_request_context(headers={"X-Correlation-ID": CID.upper()}):
        assert correlation_id_from_request() == CID
    with app.test_request_context():
        assert correlation_id_from_request() is None
    with app.test_request_context(headers={"X-Correlation-ID": ""}):
        with pytest.raises(HTTPException) as raised:
            correlation_id_from_request()
    assert raised.value.code == 400


def test_the_document_declares_the_correlation_id_rule(client: FlaskClient) -> None:
    spec = client.get("/ofa/openapi.json").get_json()
    for name in MACHINE_METHODS:
        path = spec["paths"][f"/ofa/methods/{name}"]
        operation = path["post"]
        (header,) = [p for p in path["parameters"] if p["name"] == "X-Correlation-ID"]
        assert header["in"] == "header" and header["required"] is False
        pattern = header["schema"]["pattern"]
        assert header["schema"] == {"type": "string", "format": "uuid", "pattern": pattern}
        assert "X-Correlation-ID" in operation["responses"]["400"]["description"]
        assert re.fullmatch(pattern.strip("^$"), CID) and re.fullmatch(pattern.strip("^$"), CID.upper())
        for bad in ("", CID.replace("-", ""), "{" + CID + "}", "urn:uuid:" + CID):
            assert not re.search(pattern, bad), bad


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"json": {}},
        {"data": b"", "content_type": "application/json"},
    ],
    ids=["no-body", "empty-object", "empty-json-body"],
)
def test_no_argument_method_takes_an_empty_body(client: FlaskClient, kwargs: dict[str, Any]) -> None:
    response = client.post("/ofa/methods/home", **kwargs)
    assert response.status_code == 200
    assert response.get_json()["result"] == "homed"


def test_a_method_that_raises_is_reported_not_a_500(app: Flask, client: FlaskClient,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.CRITICAL, logger="flask_openfactory"):
        response = client.post("/ofa/methods/explode")
    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["result"], body["error"]) == ("ERROR", None, "RuntimeError: spindle jammed")
    published = published_result(app, "explode")
    assert (published["status"], published["error"]) == ("ERROR", "RuntimeError: spindle jammed")


def test_annotated_bool_optional_literal_enum_list_and_any(client: FlaskClient) -> None:
    assert client.post("/ofa/methods/set_feed", json={"rate": 250}).get_json()["result"] == 250
    assert client.post("/ofa/methods/coolant", json={"on": True}).get_json()["result"] == {"on": True, "note": None}
    assert client.post("/ofa/methods/coolant", json={"on": False, "note": None}).get_json()["result"] == {
        "on": False, "note": None
    }
    body = client.post(
        "/ofa/methods/configure",
        json={"mode": "manual", "color": "green", "points": [1, 2.5], "extra": {"any": ["json"]}},
    ).get_json()
    assert body["status"] == "OK"
    # The call went through the log as a command: an untyped parameter gets the argument's text,
    # exactly as a command sent by another asset would give it.
    assert body["result"] == {"mode": "manual", "color": "green", "points": [1.0, 2.5], "extra": '{"any": ["json"]}'}
    assert client.post("/ofa/methods/configure", json={}).get_json()["result"] == {
        "mode": "auto", "color": "red", "points": None, "extra": None
    }


BAD_INPUT = [
    # (id, method, kwargs, status, expected "errors" or None to skip the check)
    ("invalid-json", "move_axis", {"data": b"{'x': 1", "content_type": "application/json"}, 400,
     {"json": ["Invalid JSON body."]}),
    ("not-utf8", "move_axis", {"data": b"\xff\xfe", "content_type": "application/json"}, 400,
     {"json": ["Invalid JSON body."]}),
    ("json-list", "move_axis", {"json": [1, 2]}, 422, {"json": {"_schema": ["Invalid input type."]}}),
    ("json-string", "move_axis", {"json": "x=1"}, 422, {"json": {"_schema": ["Invalid input type."]}}),
    ("json-null", "home", {"data": b"null", "content_type": "application/json"}, 422,
     {"json": {"_schema": ["Invalid input type."]}}),
    ("json-number", "home", {"data": b"5", "content_type": "application/json"}, 422,
     {"json": {"_schema": ["Invalid input type."]}}),
    ("missing-required", "move_axis", {"json": {"x": 1}}, 422,
     {"json": {"y": ["Missing data for required field."]}}),
    ("missing-all", "move_axis", {}, 422,
     {"json": {"x": ["Missing data for required field."], "y": ["Missing data for required field."]}}),
    ("unknown-field", "move_axis", {"json": {"x": 1, "y": 2, "z": 3}}, 422, {"json": {"z": ["Unknown field."]}}),
    ("unknown-field-no-params", "home", {"json": {"force": True}}, 422, {"json": {"force": ["Unknown field."]}}),
    ("string-for-float", "move_axis", {"json": {"x": "1", "y": 2}}, 422, {"json": {"x": ["Not a valid number."]}}),
    ("bool-for-float", "move_axis", {"json": {"x": True, "y": 2}}, 422, {"json": {"x": ["Not a valid number."]}}),
    ("nan-for-float", "move_axis", {"data": b'{"x": NaN, "y": 2}', "content_type": "application/json"}, 422, None),
    ("string-for-int", "set_feed", {"json": {"rate": "5"}}, 422, {"json": {"rate": ["Not a valid integer."]}}),
    ("float-for-int", "set_feed", {"json": {"rate": 5.5}}, 422, {"json": {"rate": ["Not a valid integer."]}}),
    ("bool-for-int", "set_feed", {"json": {"rate": True}}, 422, {"json": {"rate": ["Not a valid integer."]}}),
    ("null-for-int", "set_feed", {"json": {"rate": None}}, 422, {"json": {"rate": ["Field may not be null."]}}),
    ("string-for-bool", "coolant", {"json": {"on": "yes"}}, 422, {"json": {"on": ["Not a valid boolean."]}}),
    ("int-for-bool", "coolant", {"json": {"on": 1}}, 422, {"json": {"on": ["Not a valid boolean."]}}),
    ("number-for-str", "coolant", {"json": {"on": True, "note": 5}}, 422, {"json": {"note": ["Not a valid string."]}}),
    ("bad-literal", "configure", {"json": {"mode": "turbo"}}, 422,
     {"json": {"mode": ["Must be one of: auto, manual."]}}),
    ("bad-enum", "configure", {"json": {"color": "RED"}}, 422, {"json": {"color": ["Must be one of: red, green."]}}),
    ("bad-list", "configure", {"json": {"points": [1, "a"]}}, 422,
     {"json": {"points": {"1": ["Not a valid number."]}}}),
    ("text-body", "move_axis", {"data": "x=1", "content_type": "text/plain"}, 415, None),
    ("form-body", "move_axis", {"data": {"x": "1", "y": "2"}}, 415, None),
    ("json-without-content-type", "move_axis", {"data": b'{"x": 1, "y": 2}'}, 415, None),
]


@pytest.mark.parametrize(
    ("method", "kwargs", "status", "errors"),
    [case[1:] for case in BAD_INPUT],
    ids=[case[0] for case in BAD_INPUT],
)
def test_bad_arguments(
    app: Flask, client: FlaskClient, method: str, kwargs: dict[str, Any], status: int, errors: Any
) -> None:
    response = client.post(f"/ofa/methods/{method}", **kwargs)
    body = assert_json_error(response, status)
    if errors is not None:
        assert body["errors"] == errors
    assert published(app, f"{method}_RESULT") is None  # the method never ran


def test_unknown_method_names_the_known_ones(client: FlaskClient) -> None:
    assert assert_json_error(client.post("/ofa/methods/launch", json={}), 404) == {
        "code": 404,
        "status": "Not Found",
        "message": "asset 'TEST-ASSET' has no method 'launch'; known methods: " + ", ".join(sorted(MACHINE_METHODS)),
        "errors": {"known_methods": sorted(MACHINE_METHODS)},
    }


@pytest.mark.parametrize(
    ("verb", "path", "allow"),
    [
        ("get", "/ofa/methods/move_axis", "POST, OPTIONS"),
        ("put", "/ofa/methods/move_axis", "POST, OPTIONS"),
        ("get", "/ofa/methods/launch", "POST, OPTIONS"),
        ("post", "/ofa/health", "GET, HEAD, OPTIONS"),
        ("delete", "/ofa/attributes", "GET, HEAD, OPTIONS"),
        ("patch", "/ofa/attributes/avail", "GET, HEAD, OPTIONS"),
        ("post", "/ofa/methods", "GET, HEAD, OPTIONS"),
        ("post", "/ofa/openapi.json", "GET, HEAD, OPTIONS"),
        ("post", "/ofa/docs", "GET, HEAD, OPTIONS"),
    ],
)
def test_wrong_http_method_is_a_json_405(client: FlaskClient, verb: str, path: str, allow: str) -> None:
    response = getattr(client, verb)(path)
    body = assert_json_error(response, 405)
    assert response.headers["Allow"] == allow
    assert body["message"] == f"{path} does not serve {verb.upper()}; it serves {allow}"


GET_ROUTE = "GET, HEAD, OPTIONS"
POST_ROUTE = "POST, OPTIONS"
ROUTES = [
    ("/ofa/health", GET_ROUTE),
    ("/ofa/ready", GET_ROUTE),
    ("/ofa/attributes", GET_ROUTE),
    ("/ofa/attributes/avail", GET_ROUTE),
    ("/ofa/attributes/unknown", GET_ROUTE),  # the route serves GET (its answer is a 404)
    ("/ofa/methods", GET_ROUTE),
    ("/ofa/methods/move_axis", POST_ROUTE),
    ("/ofa/methods/home", POST_ROUTE),
    ("/ofa/methods/launch", POST_ROUTE),  # no such method: POST answers 404, like for any caller
    ("/ofa/openapi.json", GET_ROUTE),
    ("/ofa/docs", GET_ROUTE),
    ("/ofa/docs/static/swagger-ui.css", GET_ROUTE),
    ("/ofa/metrics", GET_ROUTE),
]
# Every verb a client could send: the standard ones and some others, some nobody registered.
VERBS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT", "PROPFIND", "MKCOL", "FOO"]


@pytest.mark.parametrize(("path", "allow"), ROUTES)
def test_options_lists_exactly_what_the_route_serves(client: FlaskClient, path: str, allow: str) -> None:
    response = client.options(path)
    assert response.status_code == 200
    assert response.headers["Allow"] == allow
    assert response.get_data() == b"" and "Content-Type" not in response.headers
    for verb in VERBS:
        with client.open(path, method=verb) as answer:
            if verb in allow.split(", "):
                assert answer.status_code != 405, (verb, path)
                continue
            assert answer.headers["Allow"] == allow, (verb, path)
            if verb == "HEAD":  # no body, ever
                assert (answer.status_code, answer.mimetype) == (405, "application/json")
            else:  # unknown verbs included
                assert_json_error(answer, 405)


@pytest.mark.parametrize("path", ["/ofa/nothing", "/ofa", "/ofa/", "/ofa/methods/home/x"])
@pytest.mark.parametrize("verb", ["OPTIONS", "TRACE", "FOO"])
def test_any_verb_on_an_unknown_path_is_a_json_404(client: FlaskClient, path: str, verb: str) -> None:
    assert_json_error(client.open(path, method=verb), 404)


def test_host_routes_under_the_prefix_keep_their_methods(build: Callable[..., Flask]) -> None:
    app = build(start=False)
    app.add_url_rule("/ofa/custom", "custom", lambda: "custom", methods=["GET", "PROPFIND"])

    def own_options() -> tuple[str, int, dict[str, str]]:
        return "mine", 200, {"Allow": "OPTIONS, DELETE"}

    app.add_url_rule("/ofa/own-options", "own_options", own_options, methods=["OPTIONS"],
                     provide_automatic_options=False)
    client = app.test_client()
    assert client.options("/ofa/custom").headers["Allow"] == "GET, HEAD, OPTIONS, PROPFIND"
    assert client.open("/ofa/custom", method="PROPFIND").get_data(as_text=True) == "custom"
    response = client.put("/ofa/custom")
    assert_json_error(response, 405)
    assert response.headers["Allow"] == "GET, HEAD, OPTIONS, PROPFIND"
    own = client.options("/ofa/own-options")
    assert (own.get_data(as_text=True), own.headers["Allow"]) == ("mine", "OPTIONS, DELETE")


def test_host_routes_outside_the_prefix_keep_flasks_answers(client: FlaskClient) -> None:
    response = client.options("/upload")
    assert response.status_code == 200 and set(response.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
    trace = client.open("/", method="TRACE")  # the host app's own 405 page
    assert trace.status_code == 405 and trace.mimetype == "text/html"


def test_with_the_root_prefix_options_is_flasks_own(build: Callable[..., Flask]) -> None:
    client = build(OPENFACTORY_URL_PREFIX="/").test_client()
    assert set(client.options("/health").headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    assert set(client.options("/methods/home").headers["Allow"].split(", ")) == {"POST", "OPTIONS"}


@pytest.mark.parametrize("path", ["/ofa/nothing", "/ofa/", "/ofa", "/ofa/attributes/a/b", "/ofa/methods/home/x"])
def test_unknown_path_inside_the_prefix_is_a_json_404(client: FlaskClient, path: str) -> None:
    assert_json_error(client.get(path), 404)
    assert_json_error(client.delete(path), 404)


def test_missing_static_file_is_a_json_404(client: FlaskClient) -> None:
    assert_json_error(client.get("/ofa/docs/static/missing.js"), 404)
    assert_json_error(client.get("/ofa/docs/static/../../health"), 404)


# -- body size ----------------------------------------------------------------------------------


def test_oversize_body_is_413(client: FlaskClient) -> None:
    body = json.dumps({"x": 1, "y": 2, "pad": "a" * 70_000})
    response = client.post("/ofa/methods/move_axis", data=body, content_type="application/json")
    assert assert_json_error(response, 413)["message"] == (
        f"request body of {len(body)} bytes is over the limit of 65536 bytes"
    )


def test_oversize_chunked_body_is_413(client: FlaskClient) -> None:
    """No Content-Length: the per-request limit stops the read itself."""
    payload = b'{"x": 1, "y": 2, "pad": "' + b"a" * 70_000 + b'"}'
    response = client.post(
        "/ofa/methods/move_axis",
        input_stream=io.BytesIO(payload),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert_json_error(response, 413)


def test_chunked_body_of_exactly_the_limit_is_accepted(build: Callable[..., Flask]) -> None:
    payload = b'{"x": 1, "y": 2}'
    app = build(OPENFACTORY_MAX_BODY=len(payload))
    response = app.test_client().post(
        "/ofa/methods/move_axis",
        input_stream=io.BytesIO(payload),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 200, response.get_data(as_text=True)


def test_body_limit_is_configurable_and_leaves_the_app_alone(build: Callable[..., Flask]) -> None:
    app = build(OPENFACTORY_MAX_BODY=16)
    client = app.test_client()
    assert client.post("/ofa/methods/move_axis", json={"x": 1, "y": 2}).status_code == 200  # 16 bytes
    assert_json_error(client.post("/ofa/methods/move_axis", json={"x": 10, "y": 20}), 413)
    assert app.config["MAX_CONTENT_LENGTH"] is None
    assert client.post("/upload", data=b"a" * 200_000).get_data(as_text=True) == "200000"


def test_the_apps_smaller_global_limit_still_applies(build: Callable[..., Flask]) -> None:
    app = build(MAX_CONTENT_LENGTH=10)
    assert_json_error(app.test_client().post("/ofa/methods/move_axis", json={"x": 1, "y": 2}), 413)


def test_bad_max_body_config_fails_at_init() -> None:
    from flask_openfactory.transports import ConfigurationError

    with pytest.raises(ConfigurationError, match="OPENFACTORY_MAX_BODY"):
        make_app(OPENFACTORY_MAX_BODY="64k")


# -- OpenAPI document and docs ---------------------------------------------------------------------


def test_openapi_document(client: FlaskClient) -> None:
    response = client.get("/ofa/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    assert spec["openapi"] == "3.0.3"
    assert spec["info"]["title"] == "OpenFactory asset TEST-ASSET"
    assert spec["info"]["version"] == "1.2.3"
    assert "servers" not in spec
    assert {t["name"] for t in spec["tags"]} == {"asset", "methods"}
    paths = spec["paths"]
    for path in ("/ofa/health", "/ofa/ready", "/ofa/attributes", "/ofa/attributes/{attribute_id}", "/ofa/methods"):
        assert "get" in paths[path], path
    assert "/ofa/docs" not in paths and "/ofa/methods/{name}" not in paths
    for name in MACHINE_METHODS:
        operation = paths[f"/ofa/methods/{name}"]["post"]
        assert operation["tags"] == ["methods"]
        assert {"200", "400", "413", "415", "422"} <= set(operation["responses"])
    assert paths["/ofa/ready"]["get"]["responses"]["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Readiness"
    }

    schemas = spec["components"]["schemas"]
    move_axis_op = paths["/ofa/methods/move_axis"]["post"]
    assert move_axis_op["summary"] == "move_axis(x: float, y: float, speed: int = 100)"
    assert move_axis_op["description"] == "Move the axis to (x, y)."
    assert move_axis_op["requestBody"]["required"] is True
    assert move_axis_op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MoveAxisArguments"
    }
    assert schemas["MoveAxisArguments"] == {
        "type": "object",
        "properties": {
            "x": {"type": "number"},
            "y": {"type": "number"},
            "speed": {"type": "integer", "default": 100},
        },
        "required": ["x", "y"],
        "additionalProperties": False,
    }
    assert paths["/ofa/methods/home"]["post"]["requestBody"]["required"] is False
    assert schemas["HomeArguments"] == {"type": "object", "properties": {}, "additionalProperties": False}
    assert schemas["SetFeedArguments"]["properties"] == {
        "rate": {"type": "integer", "description": "feed rate in mm/min"}
    }
    assert schemas["SetFeedArguments"]["required"] == ["rate"]
    assert schemas["CoolantArguments"]["properties"] == {
        "on": {"type": "boolean", "description": "coolant on or off"},
        "note": {"type": "string", "nullable": True, "default": None},
    }
    configure = schemas["ConfigureArguments"]["properties"]
    assert configure["mode"] == {"type": "string", "enum": ["auto", "manual"], "default": "auto"}
    assert configure["color"]["enum"] == ["red", "green"] and configure["color"]["default"] == "red"
    assert configure["points"] == {"type": "array", "items": {"type": "number"}, "nullable": True, "default": None}
    assert configure["extra"]["nullable"] is True and configure["extra"]["default"] is None
    assert "required" not in schemas["ConfigureArguments"]
    assert set(schemas["MethodResult"]["required"]) == {
        "method", "correlation_id", "sender_uuid", "status", "result", "error", "duration_ms"
    }


def test_docs_page_uses_only_local_assets(client: FlaskClient) -> None:
    response = client.get("/ofa/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html and "cdn" not in html.lower()
    assert '"/ofa/openapi.json"' in html
    assert "validatorUrl: null" in html
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls and all(url.startswith("/ofa/docs/static/") for url in urls)
    for name in ("swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png"):
        assert f"/ofa/docs/static/{name}" in urls
    for url in urls:
        with client.get(url) as asset:
            assert asset.status_code == 200, url
            assert len(asset.get_data()) > 100, url


def test_docs_follow_the_forwarded_prefix(client: FlaskClient) -> None:
    headers = {"X-Forwarded-Prefix": "/gateway/asset"}
    html = client.get("/ofa/docs", headers=headers).get_data(as_text=True)
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls and all(url.startswith("/gateway/asset/ofa/docs/static/") for url in urls)
    assert '"/gateway/asset/ofa/openapi.json"' in html
    spec = client.get("/ofa/openapi.json", headers=headers).get_json()
    assert spec["servers"] == [{"url": "/gateway/asset"}]
    body = client.post("/ofa/methods/launch", headers=headers).get_json()
    assert body["code"] == 404


def test_docs_follow_application_root(build: Callable[..., Flask]) -> None:
    app = build(APPLICATION_ROOT="/plant")
    client = app.test_client()
    html = client.get("/ofa/docs").get_data(as_text=True)
    assert '"/plant/ofa/openapi.json"' in html
    assert "/plant/ofa/docs/static/swagger-ui-bundle.js" in html
    with client.get("/ofa/docs/static/swagger-ui-bundle.js") as asset:
        assert asset.status_code == 200
    assert client.get("/ofa/methods").get_json()[0]["url"] == "/plant/ofa/methods/move_axis"


def test_swagger_ui_config_is_passed_through(build: Callable[..., Flask]) -> None:
    app = build(OPENFACTORY_SWAGGER_UI_CONFIG={"docExpansion": "none"})
    assert '{"docExpansion": "none"}' in app.test_client().get("/ofa/docs").get_data(as_text=True)


# -- prefix, host app and coexistence -------------------------------------------------------------------


def test_configurable_prefix(build: Callable[..., Flask]) -> None:
    app = build(OPENFACTORY_URL_PREFIX="/asset")
    client = app.test_client()
    assert client.get("/asset/health").get_json()["status"] == "alive"
    assert client.post("/asset/methods/home").get_json()["result"] == "homed"
    assert client.get("/asset/methods").get_json()[0]["url"] == "/asset/methods/move_axis"
    spec = client.get("/asset/openapi.json").get_json()
    assert "/asset/methods/move_axis" in spec["paths"] and "/ofa/health" not in spec["paths"]
    html = client.get("/asset/docs").get_data(as_text=True)
    assert '"/asset/openapi.json"' in html and "/asset/docs/static/swagger-ui.css" in html
    assert_json_error(client.get("/asset/nothing"), 404)
    old = client.get("/ofa/health")  # not ours any more: the host app's page
    assert old.status_code == 404 and old.mimetype == "text/html"


def test_root_prefix_leaves_the_host_404_alone(build: Callable[..., Flask]) -> None:
    app = build(OPENFACTORY_URL_PREFIX="/")
    client = app.test_client()
    assert client.get("/health").get_json()["status"] == "alive"
    assert "/methods/move_axis" in client.get("/openapi.json").get_json()["paths"]
    assert client.get("/docs").status_code == 200
    assert_json_error(client.post("/methods/launch"), 404)
    unknown = client.get("/not-a-page")
    assert unknown.status_code == 404 and unknown.mimetype == "text/html"


def test_host_app_keeps_its_routes_and_html_errors(client: FlaskClient) -> None:
    assert client.get("/").get_data(as_text=True) == "host index"
    for response in (client.get("/no/such/page"), client.get("/broken"), client.post("/")):
        assert response.mimetype == "text/html"
        assert response.get_data(as_text=True).lstrip().lower().startswith("<!doctype html>")
    assert client.get("/no/such/page").status_code == 404
    assert client.get("/broken").status_code == 400
    assert client.post("/").status_code == 405


def test_host_error_handlers_still_apply_outside_the_prefix(started_apps: list[Flask]) -> None:
    app = make_app()
    started_apps.append(app)

    @app.errorhandler(404)
    def custom_404(error: Exception) -> tuple[str, int]:
        return "custom not found", 404

    client = app.test_client()
    assert client.get("/missing").get_data(as_text=True) == "custom not found"
    assert_json_error(client.get("/ofa/missing"), 404)
    assert_json_error(client.get("/ofa/attributes/missing"), 404)


class PetSchema(ma.Schema):
    name = ma.fields.String(required=True)


def _host_api_app(host_api_first: bool) -> tuple[Flask, Api]:
    """A host app with its own flask-smorest Api on the default config prefix."""
    pets = SmorestBlueprint("pets", __name__, url_prefix="/pets")

    @pets.route("/")
    @pets.response(200, PetSchema(many=True))
    def list_pets() -> list[dict[str, str]]:
        return [{"name": "Rex"}]

    api = Api()
    config = {
        "TESTING": True,
        "API_TITLE": "Pet store",
        "API_VERSION": "9.9",
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/",
        "OPENFACTORY_TRANSPORT_URL": f"memory://test-api-{uuid.uuid4().hex}",
        "OPENFACTORY_APP_UUID": "PET-ASSET",
    }
    app = build_app(__name__, config, before_extension=api.init_app if host_api_first else None, add_cli=False)
    if not host_api_first:
        api.init_app(app)
    api.register_blueprint(pets)
    app.register_blueprint(machine)
    return app, api


@pytest.mark.parametrize("host_api_first", [True, False], ids=["host-api-first", "host-api-last"])
def test_coexists_with_a_host_flask_smorest_api(started_apps: list[Flask], host_api_first: bool) -> None:
    app, api = _host_api_app(host_api_first)
    started_apps.append(app)
    runtime_of(app).start()
    client = app.test_client()

    assert client.get("/pets/").get_json() == [{"name": "Rex"}]
    host_spec = client.get("/openapi.json").get_json()
    ours = client.get("/ofa/openapi.json").get_json()
    assert host_spec["info"]["title"] == "Pet store"
    assert list(host_spec["paths"]) == ["/pets/"]
    assert ours["info"]["title"] == "OpenFactory asset PET-ASSET"
    assert "/pets/" not in ours["paths"] and "/ofa/methods/move_axis" in ours["paths"]
    assert api.spec.to_dict()["paths"] == host_spec["paths"]

    assert client.post("/ofa/methods/move_axis", json={"x": 1, "y": 2}).get_json()["status"] == "OK"
    assert_json_error(client.post("/ofa/methods/move_axis", json={"x": "a"}), 422)
    # The host chose flask-smorest's app-wide JSON errors; that is its call, not ours.
    assert client.get("/pets/nope").get_json()["code"] == 404


def test_two_apps_in_one_process_are_independent(build: Callable[..., Flask]) -> None:
    first = build(OPENFACTORY_APP_UUID="ASSET-A")
    second = build(OPENFACTORY_APP_UUID="ASSET-B", OPENFACTORY_URL_PREFIX="/asset", OPENFACTORY_MAX_BODY=8)
    third = build(OPENFACTORY_APP_UUID="ASSET-A")  # the same config again: no "already registered"

    a, b, c = first.test_client(), second.test_client(), third.test_client()
    assert a.get("/ofa/health").get_json()["asset_uuid"] == "ASSET-A"
    assert b.get("/asset/health").get_json()["asset_uuid"] == "ASSET-B"
    assert c.get("/ofa/health").get_json()["asset_uuid"] == "ASSET-A"
    assert b.get("/ofa/health").status_code == 404 and a.get("/asset/health").status_code == 404

    spec_a = a.get("/ofa/openapi.json").get_json()
    spec_b = b.get("/asset/openapi.json").get_json()
    assert spec_a["info"]["title"] == "OpenFactory asset ASSET-A"
    assert spec_b["info"]["title"] == "OpenFactory asset ASSET-B"
    assert all(path.startswith("/ofa/") for path in spec_a["paths"])
    assert all(path.startswith("/asset/") for path in spec_b["paths"])
    assert spec_a == c.get("/ofa/openapi.json").get_json()

    assert a.post("/ofa/methods/move_axis", json={"x": 1, "y": 2}).status_code == 200
    assert_json_error(b.post("/asset/methods/move_axis", json={"x": 1, "y": 2}), 413)
    assert published(first, "move_axis_RESULT") is not None
    assert published(third, "move_axis_RESULT") is None  # its own log


def test_methods_declared_later_get_their_own_blueprint(app: Flask) -> None:
    extra = AssetBlueprint("extra", __name__)

    @extra.ofa_method(name="moveAxis")  # same CamelCase as move_axis: schema names must stay unique
    def move_axis_again(x: float) -> float:
        return x

    @extra.ofa_method(name="a<b")  # a valid method name that cannot be a URL rule
    def odd() -> None:
        return None

    again = AssetBlueprint("again", __name__)
    again.method(home)  # the same function declared twice: one route, no error

    app.register_blueprint(extra)
    app.register_blueprint(again)
    client = app.test_client()
    assert client.post("/ofa/methods/home").get_json()["result"] == "homed"
    assert client.post("/ofa/methods/moveAxis", json={"x": 3}).get_json()["result"] == 3.0
    assert client.post("/ofa/methods/move_axis", json={"x": 3, "y": 4}).get_json()["status"] == "OK"
    spec = client.get("/ofa/openapi.json").get_json()
    assert spec["paths"]["/ofa/methods/moveAxis"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MoveAxisArguments2"
    }
    assert {t["name"] for t in spec["tags"]} == {"asset", "methods"}
    body = assert_json_error(client.post("/ofa/methods/a%3Cb"), 404)
    assert body["message"] == "method 'a<b' has no HTTP route: its name cannot be used in a URL"
    contracts = {c["name"]: c for c in client.get("/ofa/methods").get_json()}
    assert contracts["moveAxis"]["url"] == "/ofa/methods/moveAxis"
    assert contracts["a<b"]["url"] is None


def test_no_api_without_add_api() -> None:
    app = build_app(__name__, {"OPENFACTORY_TRANSPORT_URL": f"memory://test-api-{uuid.uuid4().hex}"},
                    blueprints=[machine], add_cli=False, add_api=False)
    assert app.test_client().get("/ofa/health").status_code == 404
