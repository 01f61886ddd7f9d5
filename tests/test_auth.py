"""HTTP access control: bearer tokens, protected read routes, the host app's hook, no secret shown.

Every app runs on its own in-memory log; a method counts its calls, so that a
refused request can be shown to have run nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, Request, abort
from flask.testing import FlaskClient
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.test import TestResponse

from app_factory import build_app
from flask_openfactory import AssetBlueprint, ConfigurationError, SampleAttribute
from flask_openfactory.auth import AccessPolicy, bearer_token
from flask_openfactory.testing import runtime_of

TOKEN = "tok-" + "A" * 28  # distinctive: grepped for in every output
OTHER_TOKEN = "second_token_for_rotation_0123456789"
KAFKA_PASSWORD = "sasl-pa55word-never-shown"
COMMAND_SECRET = "hmac-command-secret-never-shown-0123456789abcdef"
READ_ROUTES = ["/ofa/ready", "/ofa/attributes", "/ofa/attributes/spindle_speed", "/ofa/methods",
               "/ofa/openapi.json", "/ofa/docs", "/ofa/metrics"]

calls: list[str] = []


def machine_blueprint() -> AssetBlueprint:
    bp = AssetBlueprint("machine", __name__)
    bp.attribute(SampleAttribute("spindle_speed", tag="Spindle.Speed", default=0))

    @bp.ofa_method()
    def home() -> str:
        """Go home."""
        calls.append("home")
        return "homed"

    @bp.ofa_method()
    def move(x: float) -> float:
        calls.append("move")
        return x

    return bp


def make_app(**config: Any) -> Flask:
    return build_app(__name__, {"TESTING": True, "OPENFACTORY_TRANSPORT_URL": f"memory://test-auth-{uuid.uuid4().hex}",
                                "OPENFACTORY_APP_UUID": "AUTH-ASSET", "OPENFACTORY_STOP_TIMEOUT": 2.0, **config},
                     blueprints=[machine_blueprint()])


@pytest.fixture
def build() -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def build(**config: Any) -> Flask:
        app = make_app(**config)
        apps.append(app)
        runtime_of(app).start()
        return app

    calls.clear()
    yield build
    for app in apps:
        runtime_of(app).stop(timeout=2.0)


@pytest.fixture
def secured(build: Callable[..., Flask]) -> FlaskClient:
    return build(OPENFACTORY_API_TOKENS=[TOKEN, OTHER_TOKEN]).test_client()


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_json_error(response: TestResponse, code: int) -> dict[str, Any]:
    assert response.status_code == code, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["code"] == code and body["status"] and body["message"]
    assert set(body) <= {"code", "status", "message", "errors"}
    return body  # type: ignore[no-any-return]


# -- tokens on the method routes ---------------------------------------------------------


def test_method_routes_are_open_without_tokens(build: Callable[..., Flask]) -> None:
    client = build().test_client()
    assert client.post("/ofa/methods/home").get_json()["status"] == "OK"
    spec = client.get("/ofa/openapi.json").get_json()
    assert "securitySchemes" not in spec.get("components", {})
    assert "security" not in spec["paths"]["/ofa/methods/home"]["post"]


def test_no_token_is_401_with_www_authenticate(secured: FlaskClient) -> None:
    response = secured.post("/ofa/methods/home")
    body = assert_json_error(response, 401)
    assert "Bearer" in body["message"]
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="openfactory"'
    assert calls == []


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", f"Bearer {TOKEN} extra", TOKEN])
def test_a_malformed_authorization_header_is_401(secured: FlaskClient, header: str) -> None:
    response = secured.post("/ofa/methods/home", headers={"Authorization": header})
    assert_json_error(response, 401)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="openfactory", error="invalid_request"'
    assert calls == []


@pytest.mark.parametrize("token", ["wrong-token-of-good-length-000", TOKEN[:-1], TOKEN + "x", "tök€n"])
def test_a_wrong_token_is_403(secured: FlaskClient, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}".encode().decode("latin-1")}
    response = secured.post("/ofa/methods/home", headers=headers)
    body = assert_json_error(response, 403)
    assert TOKEN not in response.get_data(as_text=True) and token not in body["message"]
    assert calls == []


def test_every_configured_token_works_and_the_scheme_is_case_insensitive(secured: FlaskClient) -> None:
    for headers in (bearer(), bearer(OTHER_TOKEN), {"Authorization": f"bearer {TOKEN}"},
                    {"Authorization": f"  BEARER   {TOKEN}  "}):
        response = secured.post("/ofa/methods/move", json={"x": 1.5}, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json()["result"] == 1.5
    assert calls == ["move"] * 4


def test_the_token_is_checked_before_the_body_is_read(secured: FlaskClient) -> None:
    """An anonymous caller learns nothing from validation errors and cannot make us parse a body."""
    assert_json_error(secured.post("/ofa/methods/move", data="{not json", content_type="application/json"), 401)
    assert_json_error(secured.post("/ofa/methods/move", data=b"x" * 200_000, content_type="text/plain"), 401)
    assert_json_error(secured.post("/ofa/methods/move", json={"x": "a"}, headers=bearer()), 422)


def test_unknown_methods_need_a_token_too(secured: FlaskClient) -> None:
    """No probing for method names: the 404 lists the known ones."""
    assert_json_error(secured.post("/ofa/methods/nope"), 401)
    body = assert_json_error(secured.post("/ofa/methods/nope", headers=bearer()), 404)
    assert body["errors"]["known_methods"] == ["home", "move"]


def test_cors_preflight_and_routing_errors_need_no_token(secured: FlaskClient) -> None:
    assert secured.options("/ofa/methods/home").status_code == 200
    assert_json_error(secured.get("/ofa/methods/home"), 405)
    assert_json_error(secured.get("/ofa/nowhere"), 404)


def test_read_routes_stay_open_by_default(secured: FlaskClient) -> None:
    for path in READ_ROUTES + ["/ofa/health"]:
        assert secured.get(path).status_code == 200, path


def test_read_routes_protected_when_configured_health_always_open(build: Callable[..., Flask]) -> None:
    client = build(OPENFACTORY_API_TOKENS=[TOKEN], OPENFACTORY_PROTECT_READ_ROUTES=True).test_client()
    for path in READ_ROUTES:
        assert_json_error(client.get(path), 401)
        assert_json_error(client.get(path, headers=bearer("not-the-right-token-at-all")), 403)
        assert client.get(path, headers=bearer()).status_code == 200, path
    assert client.get("/ofa/health").status_code == 200
    assert client.head("/ofa/health").status_code == 200
    # Swagger UI's own static files are a public package: nothing to protect
    with client.get("/ofa/docs/static/swagger-ui.css") as response:
        assert response.status_code == 200
    assert_json_error(client.post("/ofa/methods/home"), 401)


def test_the_host_app_routes_are_never_guarded(build: Callable[..., Flask]) -> None:
    app = make_app(OPENFACTORY_API_TOKENS=[TOKEN], OPENFACTORY_PROTECT_READ_ROUTES=True,
                   OPENFACTORY_START_ON_REQUEST=False)

    @app.route("/mine")
    def mine() -> str:
        return "host"

    assert app.test_client().get("/mine").get_data(as_text=True) == "host"


# -- the OpenAPI document -----------------------------------------------------------------


def test_openapi_documents_the_bearer_scheme_where_it_applies(secured: FlaskClient) -> None:
    spec = secured.get("/ofa/openapi.json").get_json()
    assert spec["components"]["securitySchemes"]["bearerAuth"]["type"] == "http"
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert "security" not in spec  # no global requirement: /health must stay open
    operation = spec["paths"]["/ofa/methods/home"]["post"]
    assert operation["security"] == [{"bearerAuth": []}]
    assert {"401", "403"} <= set(operation["responses"])
    for path in ("/ofa/health", "/ofa/ready", "/ofa/attributes", "/ofa/methods", "/ofa/metrics"):
        assert "security" not in spec["paths"][path]["get"], path
    assert TOKEN not in secured.get("/ofa/openapi.json").get_data(as_text=True)


def test_openapi_marks_read_routes_when_they_are_protected(build: Callable[..., Flask]) -> None:
    client = build(OPENFACTORY_API_TOKENS=[TOKEN], OPENFACTORY_PROTECT_READ_ROUTES=True).test_client()
    spec = client.get("/ofa/openapi.json", headers=bearer()).get_json()
    for path in ("/ofa/ready", "/ofa/attributes", "/ofa/attributes/{attribute_id}", "/ofa/methods", "/ofa/metrics"):
        assert spec["paths"][path]["get"]["security"] == [{"bearerAuth": []}], path
    assert "security" not in spec["paths"]["/ofa/health"]["get"]


# -- the host app's hook -------------------------------------------------------------------

seen: list[tuple[str, str | None]] = []


def gateway_hook(request: Request, kind: str, method: str | None) -> bool | None:
    """A hook as a host app writes one: trusts its gateway's header, else defers to the tokens."""
    seen.append((kind, method))
    role = request.headers.get("X-Role")
    if role == "operator":
        return True
    if role == "viewer":
        return kind == "read"
    return None


def test_the_hook_overrides_and_falls_back_to_tokens(build: Callable[..., Flask]) -> None:
    seen.clear()
    client = build(OPENFACTORY_API_TOKENS=[TOKEN], OPENFACTORY_PROTECT_READ_ROUTES=True,
                   OPENFACTORY_AUTHORIZE=gateway_hook).test_client()
    # True: no token needed
    assert client.post("/ofa/methods/home", headers={"X-Role": "operator"}).status_code == 200
    # False: refused even with a valid token
    body = assert_json_error(client.post("/ofa/methods/home", headers={"X-Role": "viewer", **bearer()}), 403)
    assert "authorisation policy" in body["message"]
    assert client.get("/ofa/attributes", headers={"X-Role": "viewer"}).status_code == 200
    # None: the tokens decide
    assert_json_error(client.post("/ofa/methods/home"), 401)
    assert client.post("/ofa/methods/home", headers=bearer()).status_code == 200
    # never asked about /health
    assert client.get("/ofa/health").status_code == 200
    assert seen == [("method", "home"), ("method", "home"), ("read", None), ("method", "home"), ("method", "home")]
    assert calls == ["home", "home"]


def test_the_hook_alone_without_tokens_and_by_import_string(build: Callable[..., Flask]) -> None:
    client = build(OPENFACTORY_AUTHORIZE="test_auth:gateway_hook").test_client()
    assert_json_error(client.post("/ofa/methods/home", headers={"X-Role": "viewer"}), 403)
    assert client.post("/ofa/methods/home").status_code == 200  # None, and no tokens: open
    assert client.get("/ofa/methods", headers={"X-Role": "nobody"}).status_code == 200


def test_the_hook_may_abort_itself_with_its_own_status(build: Callable[..., Flask]) -> None:
    def hook(request: Request, kind: str, method: str | None) -> bool | None:
        if not request.headers.get("X-Session"):
            abort(401, description="log in first", www_authenticate=WWWAuthenticate("Cookie", {"realm": "host"}))
        return None

    client = build(OPENFACTORY_AUTHORIZE=hook).test_client()
    response = client.post("/ofa/methods/home")
    assert assert_json_error(response, 401)["message"] == "log in first"
    assert response.headers["WWW-Authenticate"] == "Cookie realm=host"
    assert_json_error(client.get("/ofa/openapi.json"), 401)  # flask-smorest's blueprint answers JSON too
    assert client.post("/ofa/methods/home", headers={"X-Session": "1"}).status_code == 200


@pytest.mark.parametrize("outcome", ["raise", "junk"])
def test_a_broken_hook_refuses(build: Callable[..., Flask], outcome: str, caplog: pytest.LogCaptureFixture) -> None:
    def hook(request: Request, kind: str, method: str | None) -> Any:
        if outcome == "raise":
            raise KeyError("session store down")
        return "yes"

    client = build(OPENFACTORY_AUTHORIZE=hook).test_client()
    with caplog.at_level(logging.CRITICAL, logger="flask_openfactory"):
        assert_json_error(client.post("/ofa/methods/home"), 500)
    assert calls == []


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "lists no token"),
        ("", "lists no token"),
        (TOKEN, None),
        (f"{TOKEN}, {OTHER_TOKEN},", None),
        (["short"], "OPENFACTORY_API_TOKENS[0] is not a usable bearer token"),
        ([TOKEN, f"{TOKEN} space"], "OPENFACTORY_API_TOKENS[1] is not a usable bearer token"),
        ([TOKEN, 12345678901234567890], "OPENFACTORY_API_TOKENS[1] must be a string"),
        ({"a": TOKEN}, "must be None or a list"),
    ],
)
def test_token_config_is_validated_without_quoting_a_token(value: Any, message: str | None) -> None:
    if message is None:
        app = make_app(OPENFACTORY_API_TOKENS=value, OPENFACTORY_START_ON_REQUEST=False)
        assert app.extensions["openfactory"].api.access.tokens[0] == TOKEN
        return
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        make_app(OPENFACTORY_API_TOKENS=value)
    assert TOKEN not in str(info.value) and "short" not in str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("OPENFACTORY_AUTHORIZE", "no_such_module_xyz:hook", "OPENFACTORY_AUTHORIZE: cannot import"),
        ("OPENFACTORY_AUTHORIZE", 42, "OPENFACTORY_AUTHORIZE must be a callable"),
        ("OPENFACTORY_PROTECT_READ_ROUTES", "maybe", "OPENFACTORY_PROTECT_READ_ROUTES must be true or false"),
    ],
)
def test_access_config_errors_name_the_key(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_app(**{key: value})


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bEaReR   abc  ") == "abc"
    for header in (None, "", "Bearer", "Basic abc", "Bearer a b", "Bearerabc", "Bearer a\tb"):
        assert bearer_token(header) is None, header


# -- no secret ever shown --------------------------------------------------------------------


def test_no_token_or_password_in_ready_metrics_cli_logs_or_reprs(
    build: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    secrets = (TOKEN, OTHER_TOKEN, KAFKA_PASSWORD, COMMAND_SECRET)
    with caplog.at_level(logging.DEBUG):
        app = build(
            OPENFACTORY_API_TOKENS=[TOKEN, OTHER_TOKEN],
            OPENFACTORY_PROTECT_READ_ROUTES=True,
            OPENFACTORY_KAFKA_CONFIG={"security.protocol": "SASL_SSL", "sasl.password": KAFKA_PASSWORD},
            OPENFACTORY_COMMAND_SECRET=COMMAND_SECRET,
        )
        client = app.test_client()
        outputs = [
            client.get("/ofa/ready", headers=bearer()).get_data(as_text=True),
            client.get("/ofa/metrics", headers=bearer()).get_data(as_text=True),
            client.get("/ofa/openapi.json", headers=bearer()).get_data(as_text=True),
            client.post("/ofa/methods/home", headers=bearer("a-wrong-but-well-formed-token")).get_data(as_text=True),
            client.post("/ofa/methods/home", headers={"Authorization": f"Basic {TOKEN}"}).get_data(as_text=True),
        ]
        runner = app.test_cli_runner()
        for args in (["ofa", "status", "--json"], ["ofa", "status"]):
            result = runner.invoke(args=args)
            assert result.exit_code == 0, result.output
            outputs.append(result.output)
        runtime = runtime_of(app)
        outputs += [repr(runtime.settings), repr(app.extensions["openfactory"].api.access), str(runtime.status())]
    outputs += [record.getMessage() for record in caplog.records]
    assert "\"ready\":true" in outputs[0] and "openfactory_ready 1.0" in outputs[1]
    for text in outputs:
        for secret in secrets:
            assert secret not in text, (secret, text[:500])


def test_the_policy_hides_its_tokens_and_checks_them_exactly() -> None:
    policy = AccessPolicy(tokens=(TOKEN,), protect_read=True)
    assert TOKEN not in repr(policy)
    assert policy.accepts(TOKEN) and not policy.accepts(TOKEN[:-1]) and not policy.accepts("")
    assert not AccessPolicy().accepts(TOKEN)  # no tokens: nothing matches (the routes are open instead)
