"""The asset's HTTP API under ``OPENFACTORY_URL_PREFIX`` (default ``/ofa``).

Documented with flask-smorest so that ``<prefix>/openapi.json`` describes
every method with the schema generated from its signature, and browsable at
``<prefix>/docs`` with the Swagger UI files of the installed
``swagger_ui_bundle`` (factory networks are often air-gapped: no CDN).

Everything here lives on our own blueprints, never app-wide: the host app
keeps its own error pages, and may run its own flask-smorest ``Api``.

Routes (prefix ``/ofa``)::

    GET  /ofa/health              liveness, never touches the transport
    GET  /ofa/ready               readiness checks, 200 or 503
    GET  /ofa/attributes          current attributes (?type= filter)
    GET  /ofa/attributes/<id>     one attribute
    GET  /ofa/methods             every method's contract
    POST /ofa/methods/<name>      run a method (one route per method)
    GET  /ofa/openapi.json        the OpenAPI document
    GET  /ofa/docs                Swagger UI (static files under /ofa/docs/static/)
    GET  /ofa/metrics             Prometheus text format (the ``metrics`` extra)

Access control (bearer tokens, the host app's hook) is in ``auth``.

Errors are JSON ``{"code", "status", "message", "errors"?}``. Routing 404 and
405 never reach a blueprint's error handler in Flask (the blueprint is not
known before a rule matched), so a catch-all ``<prefix>/<path:rest>`` rule
that takes every HTTP method (``TRACE``, ``PROPFIND``... included) answers
them as JSON. Because it takes every method, Flask's automatic ``OPTIONS``
answer would see no method missing anywhere under the prefix: ``OPTIONS`` is
answered by ``_answer_options`` instead, with exactly what the route serves.
With an empty prefix (``OPENFACTORY_URL_PREFIX="/"``) there is no catch-all,
which would swallow the host app's own 404 pages: routing errors are then the
host app's. What gunicorn refuses before the app sees it (an oversize request
line or header, a malformed request) is gunicorn's own answer.
"""

from __future__ import annotations

import enum
import functools
import json
import logging
import math
import os
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import marshmallow as ma
from flask import Blueprint as FlaskBlueprint
from flask import Flask, current_app, jsonify, request, send_from_directory, url_for
from flask import json as flask_json
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from flask_smorest import Api, Blueprint
from jinja2 import Environment, PackageLoader
from marshmallow import fields, validate
from webargs import core as webargs_core
from webargs.flaskparser import FlaskParser, abort  # flask_smorest.abort, typed NoReturn
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, default_exceptions
from werkzeug.routing import PathConverter, Rule
from werkzeug.wrappers import Response

from .auth import METHOD_ROUTE, READ_ROUTE, SCHEME_NAME, AccessPolicy, security_doc
from .auth import install as install_access
from .calls import CallConflict
from .commands import ArgumentLimits
from .methods import MethodSpec, Parameter, json_default
from .metrics import INSTALL_HINT, AppMetrics, app_metrics
from .protocol import CONDITION, EVENTS, METHOD, OPENFACTORY, SAMPLES
from .runtime import CallPending
from .settings import argument_limits
from .transports import ConfigurationError, Health, TransportBusy, TransportError

if TYPE_CHECKING:
    from .extension import OpenFactoryState

log = logging.getLogger("flask_openfactory.api")

CONFIG_PREFIX = "OPENFACTORY_"
DEFAULT_MAX_BODY = 64 * 1024
API_BLUEPRINT = "openfactory"
UI_BLUEPRINT = "openfactory_ui"
METHODS_BLUEPRINT = "openfactory_methods"
SENDER_HEADER = "X-OpenFactory-Sender"
CORRELATION_HEADER = "X-Correlation-ID"
_UUID_FORM = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_CANONICAL_UUID = re.compile(_UUID_FORM)
CORRELATION_PATTERN = f"^{_UUID_FORM}$"  # what the OpenAPI document declares (ECMA-262: "$" is the end)
# In error messages only: as a documented example, Swagger UI would send it with every call.
CORRELATION_EXAMPLE = "550e8400-e29b-41d4-a716-446655440000"
DEFAULT_SENDER = "http"

class AnyPathConverter(PathConverter):
    """Like ``path``, newlines included (``%0A`` in a URL), so the catch-all sees every path."""

    regex = "[^/][\\s\\S]*?"


# The order of an Allow header; other methods a host app serves follow, sorted.
_ALLOW_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# The catch-all's rules under the prefix: (rule, endpoint) in the UI blueprint.
_CATCH_ALL = (("", "not_found"), ("/", "not_found_slash"), ("/<ofa_anypath:rest>", "not_found_path"))
# Method names usable verbatim in a URL rule (werkzeug parses "<" and ">").
_ROUTABLE_NAME = re.compile(r"[\w\-~]+")


# -- schemas of the fixed routes ------------------------------------------------------
# apispec names a component after its class minus "Schema": keep the names
# distinct from the generated "<Method>Arguments" ones.


class ErrorSchema(ma.Schema):
    """Every error answer of our routes (documentation only)."""

    code = fields.Integer(required=True, metadata={"description": "HTTP status code"})
    status = fields.String(required=True, metadata={"description": "HTTP status name"})
    message = fields.String(required=True, metadata={"description": "What went wrong"})
    errors = fields.Dict(metadata={"description": "Validation errors by location and field"})


class PendingErrorSchema(ErrorSchema):
    """504 of a method call: where to fetch the result later."""

    correlation_id = fields.String(required=True)
    result_url = fields.String(required=True)
    ran = fields.Boolean(metadata={"description": (
        "true: the method ran and the log refused its result, which is written when the log takes "
        "writes again; absent: it may not have run yet")})


class HealthSchema(ma.Schema):
    status = fields.String(required=True, metadata={"description": "Always 'alive'"})
    asset_uuid = fields.String(required=True)
    pid = fields.Integer(required=True, metadata={"description": "Process answering"})


class ReadinessCheckSchema(ma.Schema):
    ok = fields.Boolean(required=True)
    detail = fields.String(required=True)
    since = fields.String(metadata={"description": "UTC time the state last changed"})


class ReadinessSchema(ma.Schema):
    ready = fields.Boolean(required=True)
    checks = fields.Dict(keys=fields.String(), values=fields.Nested(ReadinessCheckSchema), required=True)


class AttributeRecordSchema(ma.Schema):
    id = fields.String(required=True)
    value = fields.Raw(required=True, allow_none=True, metadata={"description": "A JSON scalar"})
    tag = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf([SAMPLES, EVENTS, CONDITION, OPENFACTORY]))
    timestamp = fields.String(required=True, metadata={"description": "UTC ISO 8601, milliseconds, 'Z'"})


class AttributeQuerySchema(ma.Schema):
    type = fields.String(
        validate=validate.OneOf([SAMPLES, EVENTS, CONDITION, OPENFACTORY]),
        metadata={"description": "Only attributes of this TYPE"},
    )


class MethodArgumentSchema(ma.Schema):
    name = fields.String(required=True)
    type = fields.String(required=True)
    required = fields.Boolean(required=True)
    default = fields.Raw(allow_none=True, required=True)
    description = fields.String(required=True)


class MethodContractSchema(ma.Schema):
    name = fields.String(required=True)
    description = fields.String(required=True)
    signature = fields.String(required=True)
    url = fields.String(allow_none=True, required=True, metadata={"description": "Where to POST the arguments"})
    arguments = fields.List(fields.Nested(MethodArgumentSchema), required=True)


class MethodResultSchema(ma.Schema):
    method = fields.String(required=True)
    correlation_id = fields.String(required=True)
    sender_uuid = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["OK", "ERROR", "REJECTED"]))
    result = fields.Raw(allow_none=True, required=True, metadata={"description": "The return value, or its repr"})
    error = fields.String(allow_none=True, required=True, metadata={"description": "'Type: message' when it raised"})
    duration_ms = fields.Float(required=True)


class PendingCallSchema(ma.Schema):
    correlation_id = fields.String(required=True)
    method = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["PENDING"]))
    ran = fields.Boolean(metadata={"description": "true: it ran in the answering process; its result "
                                                  "is held until the log takes writes again"})
    detail = fields.String(metadata={"description": "Why the result of a call that ran is not recorded"})


_FIXED_SCHEMA_NAMES = frozenset(
    {"Error", "PendingError", "Health", "ReadinessCheck", "Readiness", "AttributeRecord", "AttributeQuery",
     "MethodArgument", "MethodContract", "MethodResult", "PendingCall"}
)


# -- the Api --------------------------------------------------------------------------


class OpenFactoryApi(Api):  # type: ignore[misc]
    """An ``Api`` whose JSON error handler stays on our blueprints.

    flask-smorest registers its handler for every ``HTTPException`` app-wide
    (flask-smorest issue #640), which would turn the host app's HTML error
    pages into JSON; we attach ours per blueprint instead.
    """

    ERROR_SCHEMA = ErrorSchema

    def __init__(self, app: Flask | None = None, **kwargs: Any) -> None:
        self.method_endpoints: dict[str, str] = {}  # method name -> endpoint
        self.endpoint_methods: dict[str, str] = {}  # endpoint -> method name (access control)
        self.access = AccessPolicy()
        self.metrics: AppMetrics | None = None  # None without prometheus-client
        self.limits = ArgumentLimits()  # OPENFACTORY_MAX_ARGUMENTS / _MAX_COMMAND_BYTES on the method routes
        self.schema_names: set[str] = set(_FIXED_SCHEMA_NAMES)
        self.blueprint_count = 0
        self._ui_env: Environment | None = None
        super().__init__(app, **kwargs)

    def _register_error_handlers(self) -> None:
        """Nothing app-wide: see ``_guard`` for our blueprints."""

    def register_blueprint(self, blp: Blueprint, *, parameters: Any = None, **options: Any) -> None:
        """Register and document, without the per-blueprint tag.

        flask-smorest adds one OpenAPI tag per blueprint, and Swagger UI shows
        every declared tag, even one without operations; our operations carry
        the tags ``asset`` and ``methods`` instead (cosmetic: skipped if
        apispec's private tag list ever changes).
        """
        super().register_blueprint(blp, parameters=parameters, **options)
        name = options.get("name", blp.name)
        tags = getattr(self.spec, "_tags", None)
        if isinstance(tags, list):
            tags[:] = [t for t in tags if not (isinstance(t, dict) and t.get("name") == name)]

    @property
    def doc_blueprint_name(self) -> str:
        return str(self._make_doc_blueprint_name())

    @property
    def serves_spec(self) -> bool:
        return self.config.get("OPENAPI_URL_PREFIX") is not None

    def _openapi_json(self) -> Response:
        """The spec, with a ``servers`` entry when mounted under a path prefix.

        Paths in the spec are relative to the app's root; behind a gateway that
        adds ``X-Forwarded-Prefix`` Swagger UI's "Try it out" needs that root.
        """
        spec = self.spec.to_dict()
        if request.script_root and "servers" not in spec:
            spec["servers"] = [{"url": request.script_root}]
        text = flask_json.dumps(spec, indent=2, sort_keys=False)
        return current_app.response_class(text, mimetype="application/json")

    def unique_schema_name(self, base: str) -> str:
        name, n = base, 1
        while name in self.schema_names:
            n += 1
            name = f"{base}{n}"
        self.schema_names.add(name)
        return name

    def next_blueprint_name(self) -> str:
        self.blueprint_count += 1
        return f"{METHODS_BLUEPRINT}_{self.blueprint_count}"

    def ui_environment(self) -> Environment:
        """Our templates, isolated from the app's and other blueprints'.

        flask-smorest's doc blueprint also ships a ``swagger_ui.html``, and it
        is registered first, so Flask's shared loader would find that one.
        """
        if self._ui_env is None:
            self._ui_env = current_app.jinja_env.overlay(loader=PackageLoader("flask_openfactory", "templates"))
        return self._ui_env


def init_api(app: Flask, state: OpenFactoryState) -> OpenFactoryApi:
    """Create the app's ``Api`` (config prefix ``OPENFACTORY_``) and its routes."""
    runtime = state.runtime
    config = app.config
    config.setdefault(f"{CONFIG_PREFIX}API_TITLE", f"OpenFactory asset {runtime.asset_uuid}")
    config.setdefault(f"{CONFIG_PREFIX}API_VERSION", runtime.settings.application_version)
    config.setdefault(f"{CONFIG_PREFIX}OPENAPI_VERSION", "3.0.3")
    config.setdefault(f"{CONFIG_PREFIX}OPENAPI_URL_PREFIX", state.url_prefix or "/")
    config.setdefault(f"{CONFIG_PREFIX}OPENAPI_JSON_PATH", "openapi.json")
    config.setdefault(
        f"{CONFIG_PREFIX}API_SPEC_OPTIONS",
        {"info": {"description": f"HTTP API of OpenFactory asset {runtime.asset_uuid}: state, health and methods."}},
    )
    config.setdefault(f"{CONFIG_PREFIX}MAX_BODY", DEFAULT_MAX_BODY)
    config.setdefault(f"{CONFIG_PREFIX}SWAGGER_UI_CONFIG", {})
    _check_max_body(config[f"{CONFIG_PREFIX}MAX_BODY"])

    access = AccessPolicy.from_config(config)
    api = OpenFactoryApi(app, config_prefix=CONFIG_PREFIX)
    api.access = access
    api.metrics = app_metrics(runtime)
    api.limits = argument_limits(config)
    if access.tokens is not None:
        api.spec.components.security_scheme(SCHEME_NAME, {
            "type": "http", "scheme": "bearer",
            "description": "One of OPENFACTORY_API_TOKENS, as 'Authorization: Bearer <token>'",
        })
    api.spec.tag({"name": "asset", "description": f"State and health of asset {runtime.asset_uuid}"})
    api.spec.tag({"name": "methods", "description": "The asset's methods: contracts and calls"})
    api.register_blueprint(_api_blueprint(state, api))
    app.url_map.converters.setdefault("ofa_anypath", AnyPathConverter)  # for the catch-all
    app.register_blueprint(_ui_blueprint(state, api))
    install_access(app, access, lambda endpoint: _route_kind(api, endpoint))
    _install_busy_handler(app)
    if state.url_prefix:
        app.before_request(functools.partial(_answer_options, state.url_prefix))
    return api


def _install_busy_handler(app: Flask) -> None:
    """The host app's own routes that set attributes answer a full outgoing queue with 503 JSON too.

    Only for our own exception, and only if the app has no handler for it yet
    (one it registers later replaces this one): its other error pages stay its own.
    """
    handlers = app.error_handler_spec.get(None, {}).get(None, {})
    if TransportBusy not in handlers and TransportError not in handlers:
        app.register_error_handler(TransportBusy, _transport_error)


def _route_kind(api: OpenFactoryApi, endpoint: str | None) -> tuple[str, str | None] | None:
    """What an endpoint of ours is for access control; None: always open (or not ours)."""
    if endpoint is None:
        return None  # routing failed: the JSON 404/405 tells nothing
    if endpoint in api.endpoint_methods:
        return METHOD_ROUTE, api.endpoint_methods[endpoint]
    blueprint, _, name = endpoint.rpartition(".")
    if blueprint == API_BLUEPRINT:
        return None if name == "health" else (READ_ROUTE, None)  # orchestrators probe /health bare
    if blueprint == api.doc_blueprint_name:
        return READ_ROUTE, None
    if blueprint == UI_BLUEPRINT:
        if name == "docs":
            return READ_ROUTE, None
        if name == "unknown_method":  # no probing for method names without a token
            return METHOD_ROUTE, (request.view_args or {}).get("name")
    return None  # Swagger UI's static files, the JSON 404/405 fallbacks, the host app


def _check_max_body(value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ConfigurationError(f"OPENFACTORY_MAX_BODY must be a byte count (int >= 0) or None, got {value!r}")


# -- guards shared by our blueprints ---------------------------------------------------


def _json_error(error: HTTPException) -> ResponseReturnValue:
    """flask-smorest's payload, plus a message always and the Allow header kept."""
    code = error.code or 500
    data: Mapping[str, Any] = getattr(error, "data", None) or {}
    payload: dict[str, Any] = {
        "code": code,
        "status": error.name,
        "message": data.get("message") or error.description or error.name,
    }
    errors = data.get("errors", data.get("messages"))
    if errors and "message" not in data:
        payload["message"] = "Invalid request: see 'errors'"
    if errors:
        payload["errors"] = errors
    headers = dict(data.get("headers") or {})
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        headers["Allow"] = ", ".join(error.valid_methods)
    return jsonify(payload), code, headers


def _transport_error(error: TransportError) -> ResponseReturnValue:
    """The log is unreachable or its outgoing queue is full: the client may retry later, not our bug.

    A full queue (``TransportBusy``) is counted (``openfactory_busy_refusals_total``)
    and says when to retry: nothing of the request was queued after the refusal.
    """
    body = {"code": 503, "status": "Service Unavailable", "message": str(error)}
    if not isinstance(error, TransportBusy):
        return jsonify(body), 503
    state = current_app.extensions.get("openfactory")
    if state is not None:
        state.runtime.counters["busy_refusals"] += 1
    return jsonify(body), 503, {"Retry-After": str(max(1, math.ceil(error.retry_after)))}


def _call_pending(error: CallPending) -> ResponseReturnValue:
    """The call is in the log and will run; its result is fetched later by its id."""
    location = url_for(f"{API_BLUEPRINT}.result", correlation_id=error.correlation_id)
    body = {"code": 504, "status": "Gateway Timeout", "message": str(error),
            "correlation_id": error.correlation_id, "result_url": location}
    if error.ran:
        body["ran"] = True
    return jsonify(body), 504, {CORRELATION_HEADER: error.correlation_id, "Location": location}


def _limit_body() -> None:
    """``OPENFACTORY_MAX_BODY`` on our routes only; the app's global limit stays."""
    ours = current_app.config.get(f"{CONFIG_PREFIX}MAX_BODY", DEFAULT_MAX_BODY)
    global_ = current_app.config.get("MAX_CONTENT_LENGTH")
    limit = global_ if ours is None else ours if global_ is None else min(ours, global_)
    if limit is None:
        return
    try:
        request.max_content_length = limit  # Flask >= 3.1: also bounds chunked bodies
    except AttributeError:  # pragma: no cover - Flask 3.0 has no per-request limit
        pass
    if request.content_length is not None and request.content_length > limit:
        abort(413, message=f"request body of {request.content_length} bytes is over the limit of {limit} bytes")


def _read_json_body(limits: ArgumentLimits) -> None:
    """Read the body once (cached for webargs): enforce the limits, require JSON.

    A streamed body (no Content-Length) over the limit is cut at the limit by
    werkzeug without an error, so one more byte decides between "exactly the
    limit" and "too large". A body that is not JSON would otherwise read as
    ``{}`` (webargs' rule) and fail with a misleading "missing field".
    """
    data = request.get_data(cache=True)
    limit = request.max_content_length
    environ = request.environ
    if limit is not None and len(data) >= limit and request.content_length is None:
        # only a server-terminated stream may be read past the limit without blocking
        if environ.get("wsgi.input_terminated") and environ["wsgi.input"].read(1):
            abort(413, message=f"request body is over the limit of {limit} bytes")
    if data and not request.is_json:
        abort(415, message=f"send the arguments as a JSON object with Content-Type: application/json, "
                           f"not {request.mimetype or 'no content type'}")
    too_large = limits.size_error(len(data), "the arguments (the request body) are")
    if too_large:
        abort(413, message=too_large)


def _guard(blueprint: FlaskBlueprint) -> FlaskBlueprint:
    """JSON errors and the body limit, on this blueprint only.

    Flask tries code-specific handlers (blueprint, then app) before class
    handlers, so a host app's ``errorhandler(404)`` would beat a blueprint's
    ``HTTPException`` handler: register each standard code as well.
    """
    for code in default_exceptions:
        blueprint.register_error_handler(code, _json_error)
    blueprint.register_error_handler(HTTPException, _json_error)
    blueprint.register_error_handler(TransportError, _transport_error)
    blueprint.register_error_handler(CallPending, _call_pending)
    blueprint.before_request(_limit_body)
    blueprint.before_request(_check_query_string)
    return blueprint


def _check_query_string() -> None:
    """werkzeug decodes a raw (not %-encoded) query string as strict UTF-8: a stray byte would be a 500."""
    try:
        request.query_string.decode()
    except UnicodeDecodeError:
        abort(400, message="the query string is not UTF-8: percent-encode it")


# -- fixed routes ----------------------------------------------------------------------


def _api_blueprint(state: OpenFactoryState, api: OpenFactoryApi) -> Blueprint:
    runtime = state.runtime
    blp = Blueprint(
        API_BLUEPRINT,
        __name__,
        url_prefix=state.url_prefix or None,
        description=f"OpenFactory asset {runtime.asset_uuid}",
    )
    _guard(blp)
    read = _secured(blp, api.access, READ_ROUTE)

    @blp.route("/health", tags=["asset"])
    @blp.response(200, HealthSchema)
    def health() -> dict[str, Any]:
        """Liveness of this process

        Answers without touching the transport, so a broker outage does not
        get the process restarted.
        """
        return {"status": "alive", "asset_uuid": runtime.asset_uuid, "pid": os.getpid()}

    @blp.route("/ready", tags=["asset"])
    @read
    @blp.response(200, ReadinessSchema)
    @blp.alt_response(503, schema=ReadinessSchema, description="Not ready: see the failing checks")
    def ready() -> tuple[dict[str, Any], int]:
        """Readiness of this process to serve the asset"""
        try:
            is_ready, checks = runtime.readiness()
        except Exception as exc:  # a probe must answer, not crash
            log.exception("readiness check failed")
            failed = Health(False, f"{type(exc).__name__}: {exc}")
            is_ready, checks = False, {"readiness": failed.as_dict()}
        return {"ready": is_ready, "checks": checks}, 200 if is_ready else 503

    @blp.route("/attributes", tags=["asset"])
    @read
    @blp.arguments(AttributeQuerySchema, location="query")
    @blp.response(200, AttributeRecordSchema(many=True))
    @blp.alt_response(503, schema=ErrorSchema, description="The asset's log is unreachable")
    def attributes(query: dict[str, Any]) -> list[dict[str, Any]]:
        """Current attributes of the asset

        As this process sees them (method advertisements are under /methods).
        """
        wanted = query.get("type")
        runtime.sync()  # reads follow writes: at least what the log held when the request came
        return [r.as_dict() for r in runtime.records() if wanted is None or r.type == wanted]

    @blp.route("/attributes/<attribute_id>", tags=["asset"])
    @read
    @blp.response(200, AttributeRecordSchema)
    @blp.alt_response(404, schema=ErrorSchema, description="No such attribute")
    @blp.alt_response(503, schema=ErrorSchema, description="The asset's log is unreachable")
    def attribute(attribute_id: str) -> dict[str, Any]:
        """One attribute of the asset"""
        runtime.sync()  # reads follow writes: at least what the log held when the request came
        record = runtime.get(attribute_id)
        if record is None or record.type == METHOD:
            abort(404, message=f"asset {runtime.asset_uuid!r} has no attribute {attribute_id!r}")
        return record.as_dict()

    @blp.route("/results/<correlation_id>", tags=["methods"], parameters=[{
        "in": "path", "name": "correlation_id", "required": True,
        "schema": {"type": "string", "format": "uuid", "pattern": CORRELATION_PATTERN},
        "description": "The call's correlation id (the X-Correlation-ID of an HTTP call)"}])
    @read
    @blp.response(200, MethodResultSchema, description="The call was answered")
    @blp.alt_response(202, schema=PendingCallSchema, description="The call is in the log, not yet answered")
    @blp.alt_response(400, schema=ErrorSchema, description="Not a UUID")
    @blp.alt_response(404, schema=ErrorSchema, description="No call with this id within the max age")
    @blp.alt_response(503, schema=ErrorSchema, description="The asset's log is unreachable")
    def result(correlation_id: str) -> ResponseReturnValue:
        """The result of a call, by its correlation id

        For a call that answered 504 (no result in time), and for any call or
        command of the asset within ``OPENFACTORY_COMMAND_MAX_AGE``.
        """
        cid = _canonical_correlation_id(correlation_id, "correlation_id", "path")
        entry = runtime.find_call(cid)
        if entry is None:
            abort(404, message=f"no call {cid} in the log of {runtime.asset_uuid!r} within the last "
                               f"{runtime.calls.window:g}s")
        if entry.result is None:
            pending: dict[str, Any] = {"correlation_id": cid, "method": entry.method, "status": "PENDING"}
            if entry.unrecorded is not None:
                pending.update(ran=True, detail=f"it ran; the log refused its result: {entry.unrecorded}")
            return jsonify(PendingCallSchema().dump(pending)), 202  # a Response: not dumped by the 200 schema
        return entry.result.as_dict()

    @blp.route("/methods", tags=["methods"])
    @read
    @blp.response(200, MethodContractSchema(many=True))
    def methods() -> list[dict[str, Any]]:
        """Every method of the asset and its contract"""
        return [_contract(spec, api) for spec in runtime.methods.values()]

    @blp.route("/metrics", tags=["asset"])
    @read
    @blp.doc(responses={
        "200": {"description": "Prometheus text format, or OpenMetrics when Accept asks for it",
                "content": {media: {"schema": {"type": "string"}}
                            for media in ("text/plain", "application/openmetrics-text")}},
        "404": {"description": "prometheus-client is not installed (the 'metrics' extra)",
                "content": {"application/json": {"schema": ErrorSchema}}},
    })
    def metrics() -> ResponseReturnValue:
        """Metrics in Prometheus text format

        Counters and state of this process; method results and durations of
        the asset, read back from its log (the same from every process).
        """
        if api.metrics is None:
            abort(404, message=f"metrics are not available: {INSTALL_HINT}")
        body, content_type = api.metrics.render(request.headers.get("Accept"))
        return current_app.response_class(body, content_type=content_type)

    return blp


def _secured(blp: Blueprint, access: AccessPolicy, kind: str) -> Callable[[Any], Any]:
    """Document the bearer requirement (and its 401/403) on operations that have one."""
    doc = security_doc(access, kind)

    def decorate(view: Any) -> Any:
        if not doc:
            return view
        view = blp.alt_response(401, schema=ErrorSchema, description="No or malformed bearer token")(view)
        view = blp.alt_response(403, schema=ErrorSchema, description="Token not valid, or refused")(view)
        return blp.doc(**doc)(view)

    return decorate


def _contract(spec: MethodSpec, api: OpenFactoryApi) -> dict[str, Any]:
    endpoint = api.method_endpoints.get(spec.name)
    return {
        "name": spec.name,
        "description": spec.description,
        "signature": spec.signature_text(),
        "url": url_for(endpoint) if endpoint else None,
        "arguments": spec.arguments(),
    }


# -- docs and fallbacks (plain blueprint: not part of the OpenAPI document) -----------


def _ui_blueprint(state: OpenFactoryState, api: OpenFactoryApi) -> FlaskBlueprint:
    runtime = state.runtime
    bp = _guard(FlaskBlueprint(UI_BLUEPRINT, __name__, url_prefix=state.url_prefix or None))
    static_dir = _swagger_ui_dir()

    if api.serves_spec:

        def docs() -> ResponseReturnValue:
            """Swagger UI; every URL through url_for, so it works behind a prefix."""
            template = api.ui_environment().get_template("swagger_ui.html")
            html = template.render(
                title=api.spec.title,
                spec_url=url_for(f"{api.doc_blueprint_name}.openapi_json"),
                static_endpoint=f"{UI_BLUEPRINT}.docs_static",
                config=current_app.config[f"{CONFIG_PREFIX}SWAGGER_UI_CONFIG"] or {},
            )
            return current_app.response_class(html, mimetype="text/html")

        def docs_static(filename: str) -> ResponseReturnValue:
            return send_from_directory(static_dir, filename, max_age=86400)

        bp.add_url_rule("/docs", "docs", docs)
        bp.add_url_rule("/docs/static/<path:filename>", "docs_static", docs_static)

    def unknown_method(name: str) -> ResponseReturnValue:
        known = sorted(runtime.methods)
        if name in known:
            abort(404, message=f"method {name!r} has no HTTP route: its name cannot be used in a URL")
        abort(
            404,
            message=f"asset {runtime.asset_uuid!r} has no method {name!r}; "
            f"known methods: {', '.join(known) or 'none'}",
            errors={"known_methods": known},
        )

    bp.add_url_rule("/methods/<name>", "unknown_method", unknown_method, methods=["POST"])

    if state.url_prefix:  # with no prefix, a catch-all would take over the host app's 404s

        def not_found(rest: str = "") -> ResponseReturnValue:
            allowed = _allowed_methods()
            if allowed:
                served = ", ".join(allowed)
                description = f"{request.path} does not serve {request.method}; it serves {served}"
                raise MethodNotAllowed(valid_methods=allowed, description=description)
            raise NotFound(f"{request.path} is not a route of the OpenFactory API; see {state.url_prefix}/docs")

        bp.record_once(lambda setup: _add_catch_all(setup, not_found))
    return bp


def _add_catch_all(setup: BlueprintSetupState, view: Callable[..., ResponseReturnValue]) -> None:
    """Rules without a method list: werkzeug matches them for every verb, unknown ones included.

    Flask always gives a rule a method list, so these are werkzeug rules added
    to the map directly, under the blueprint's name (its error handlers apply).
    """
    for path, name in _CATCH_ALL:
        endpoint = f"{setup.name}.{name}"
        setup.app.url_map.add(Rule(f"{setup.url_prefix}{path}", endpoint=endpoint))
        setup.app.view_functions[endpoint] = view


def _swagger_ui_dir() -> str:
    import swagger_ui_bundle

    return str(swagger_ui_bundle.swagger_ui_path)


def _allowed_methods() -> list[str]:
    """The methods some real rule serves at this path (the catch-all excluded), in Allow order.

    Every method any rule of the app declares is tried: a host app's own
    route under the prefix may serve more than ours do.
    """
    adapter = current_app.create_url_adapter(request)
    if adapter is None:  # pragma: no cover - only without a request
        return []
    fallbacks = {f"{UI_BLUEPRINT}.{name}" for _, name in _CATCH_ALL}
    candidates = {m for rule in current_app.url_map.iter_rules() for m in rule.methods or ()}
    allowed = []
    for method in candidates:
        try:
            endpoint, _ = adapter.match(request.path, method=method)
        except Exception:  # NotFound, MethodNotAllowed, RequestRedirect: no rule for this method
            continue
        if endpoint not in fallbacks:
            allowed.append(method)
    order = {m: i for i, m in enumerate(_ALLOW_ORDER)}
    return sorted(allowed, key=lambda m: (order.get(m, len(order)), m))


def _answer_options(prefix: str) -> ResponseReturnValue | None:
    """``OPTIONS`` on a route under the prefix: ``Allow`` is exactly what that route serves.

    Flask's automatic answer asks werkzeug for every method of every rule
    matching the path; the catch-all matches any method, so that list would
    be wrong. Only for rules with Flask's automatic ``OPTIONS`` (a view that
    handles ``OPTIONS`` itself keeps it), and only under the prefix.
    """
    rule = request.url_rule
    if request.method != "OPTIONS" or not getattr(rule, "provide_automatic_options", False):
        return None
    if request.path != prefix and not request.path.startswith(f"{prefix}/"):
        return None
    response = current_app.response_class(status=200)
    del response.headers["Content-Type"]  # no body, nothing to type
    response.headers["Allow"] = ", ".join(_allowed_methods())
    return response


# -- method routes ---------------------------------------------------------------------


class _StrictFloat(fields.Float):
    """JSON numbers only: ``1`` is a valid float, ``"1"`` is not (typed JSON)."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Any:
        if isinstance(value, (str, bytes)):
            raise self.make_error("invalid", input=value)
        return super()._deserialize(value, attr, data, **kwargs)


class _StrictBoolean(fields.Boolean):
    """JSON ``true``/``false`` only (marshmallow also takes "yes", 1, "on"...)."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Any:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def _scalar_field(annotation: Any, **kwargs: Any) -> fields.Field[Any] | None:
    """The field of a plain type, or None when the type is not a plain one."""
    if annotation is bool:
        return _StrictBoolean(**kwargs)
    if annotation is int:
        return fields.Integer(strict=True, **kwargs)
    if annotation is float:
        return _StrictFloat(allow_nan=False, **kwargs)
    if annotation is str:
        return fields.String(**kwargs)
    return None


def _field(annotation: Any, **kwargs: Any) -> fields.Field[Any]:
    """marshmallow field for one parameter annotation (the set ``ofa_method`` accepts)."""
    if annotation is None or annotation is Any:
        kwargs["allow_none"] = True
        return fields.Raw(**kwargs)
    scalar = _scalar_field(annotation, **kwargs)
    if scalar is not None:
        return scalar
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is list or origin is list:
        inner = (_scalar_field(args[0]) if args else None) or fields.Raw(allow_none=True)
        return fields.List(inner, **kwargs)
    if annotation is dict or origin is dict:
        values = (_scalar_field(args[1]) if len(args) == 2 else None) or fields.Raw(allow_none=True)
        return fields.Dict(keys=fields.String(), values=values, **kwargs)
    if origin is typing.Literal:
        choices = list(args)
        kwargs["validate"] = validate.OneOf(choices)
        if all(isinstance(c, str) for c in choices):
            return fields.String(**kwargs)
        if all(isinstance(c, int) and not isinstance(c, bool) for c in choices):
            return fields.Integer(strict=True, **kwargs)
        return fields.Raw(**kwargs)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return fields.Enum(annotation, by_value=True, **kwargs)
    raise TypeError(f"no JSON schema for annotation {annotation!r}")


def _parameter_field(p: Parameter) -> fields.Field[Any]:
    kwargs: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    if p.description:
        metadata["description"] = p.description
    if p.optional:
        kwargs["allow_none"] = True
    if p.required:
        kwargs["required"] = True
    else:
        default = p.default
        # marshmallow calls a callable load_default: keep the object itself
        kwargs["load_default"] = (lambda d=default: d) if callable(default) else default
        metadata["default"] = json_default(default)  # apispec reads metadata["default"] first
    if metadata:
        kwargs["metadata"] = metadata
    return _field(p.annotation, **kwargs)


def arguments_schema(spec: MethodSpec, name: str) -> type[ma.Schema]:
    """The JSON body schema of one method; unknown fields raise (marshmallow's default)."""
    return ma.Schema.from_dict({p.name: _parameter_field(p) for p in spec.parameters}, name=name)


def _camel(name: str) -> str:
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", name) if p]
    text = "".join(p[:1].upper() + p[1:] for p in parts) or "Method"
    return text if text[0].isalpha() else f"Method{text}"


class _BodyParser(FlaskParser):
    """An empty body is ``{}`` whatever its content type (no-argument methods).

    Also counts the arguments against ``OPENFACTORY_MAX_ARGUMENTS`` once the
    body is decoded, before the schema looks at any of them.
    """

    def _raw_load_json(self, req: Any) -> Any:
        if not req.get_data(cache=True):
            return webargs_core.missing
        try:
            body = super()._raw_load_json(req)
        except (ValueError, RecursionError) as exc:
            if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
                raise  # webargs answers these with its 400
            # nesting past the decoder's limit, or an int over Python's 4300-digit limit
            abort(400, exc=exc, messages={"json": ["Invalid JSON body."]})
        if isinstance(body, dict):
            too_many = _limits().count_error(len(body))
            if too_many:
                abort(400, message=too_many)
        return body


def _limits() -> ArgumentLimits:
    state = current_app.extensions.get("openfactory")
    api = getattr(state, "api", None)
    return api.limits if isinstance(api, OpenFactoryApi) else ArgumentLimits()


class _MethodBlueprint(Blueprint):  # type: ignore[misc]
    ARGUMENTS_PARSER = _BodyParser()


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
    return _canonical_correlation_id(raw, CORRELATION_HEADER, "headers")


def _canonical_correlation_id(raw: str, where: str, location: str) -> str:
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


def _sender() -> str:
    return request.headers.get(SENDER_HEADER, "").strip() or DEFAULT_SENDER


_HEADER_PARAMETERS = [
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


def add_method_routes(state: OpenFactoryState, specs: Iterable[MethodSpec]) -> None:
    """One ``POST <prefix>/methods/<name>`` per method, on a new blueprint.

    A new blueprint per call because a blueprint takes no routes once
    registered; its name is unique per app. Answers:

    - 200 with the result, ``status`` ``OK`` (returned) or ``ERROR`` (it
      raised): the call was valid and the method ran, so a raising method is
      reported in the body, like on the command channel, never as a 5xx;
    - 400 invalid JSON, an ``X-Correlation-ID`` that is not a canonical UUID
      (see ``correlation_id_from_request``) or more arguments than
      ``OPENFACTORY_MAX_ARGUMENTS``; 413 body over ``OPENFACTORY_MAX_BODY``
      or ``OPENFACTORY_MAX_COMMAND_BYTES``; 415 a body that is not JSON; 422
      arguments that do not fit the signature (wrong type, missing, unknown
      field, not an object); 503 the outgoing queue is full (``Retry-After``;
      the method did not run when it was known full before) or the result
      could not be published.

    JSON is typed: ``"1"`` is not an int, ``1`` is a valid float.
    """
    api = state.api
    if not isinstance(api, OpenFactoryApi):
        raise RuntimeError("add_method_routes needs the Api created by init_api")
    routable: list[MethodSpec] = []
    for spec in specs:
        if spec.name in api.method_endpoints or any(s.name == spec.name for s in routable):
            continue  # the same method declared again (the runtime refuses a different one)
        if _ROUTABLE_NAME.fullmatch(spec.name):
            routable.append(spec)
        else:
            log.warning("method %r gets no HTTP route: its name cannot be used in a URL", spec.name)
    if not routable:
        return
    name = api.next_blueprint_name()
    blp = _MethodBlueprint(
        name,
        __name__,
        url_prefix=state.url_prefix or None,
        description="Methods: " + ", ".join(s.name for s in routable),
    )
    _guard(blp)
    blp.before_request(lambda: _read_json_body(api.limits))
    endpoints: dict[str, str] = {}
    for index, spec in enumerate(routable):
        endpoint = f"invoke_{index}"
        schema = arguments_schema(spec, api.unique_schema_name(f"{_camel(spec.name)}Arguments"))
        view = _method_view(state, spec)
        view = blp.arguments(
            schema(),  # an instance: webargs would build a new one from a class on every request
            location="json",
            required=any(p.required for p in spec.parameters),
            description=f"Arguments of {spec.signature_text()}",
        )(view)
        view = blp.response(200, MethodResultSchema, description=(
            "The call's result from the log: OK (returned), ERROR (raised) or REJECTED (refused by the "
            "executor's rules: sender, signature, expiry, arguments)"))(view)
        view = blp.alt_response(504, schema=PendingErrorSchema, description=(
            "No result within OPENFACTORY_CALL_WAIT: the call is in the log and runs when the executor "
            "reaches it; or (ran: true) it ran and the log refused its result, written when the log takes "
            "writes again. Fetch the result at result_url; a retry with the same X-Correlation-ID never "
            "runs it twice"))(view)
        for code, why in (
            (409, "The X-Correlation-ID was already used for another call (another method or other arguments)"),
            (400, "Invalid JSON, an X-Correlation-ID that is not a canonical UUID, "
                  "or more arguments than OPENFACTORY_MAX_ARGUMENTS"),
            (413, "Body over OPENFACTORY_MAX_BODY or OPENFACTORY_MAX_COMMAND_BYTES"),
            (415, "Body is not JSON"),
            (503, "The outgoing queue is full (see Retry-After) or the log is unreachable: nothing was written"),
        ):
            view = blp.alt_response(code, schema=ErrorSchema, description=why)(view)
        view = _secured(blp, api.access, METHOD_ROUTE)(view)
        view = blp.doc(summary=spec.signature_text(), description=spec.description or spec.name)(view)
        blp.route(f"/methods/{spec.name}", endpoint=endpoint, methods=["POST"], tags=["methods"],
                  parameters=[dict(p) for p in _HEADER_PARAMETERS])(view)
        endpoints[spec.name] = f"{name}.{endpoint}"
    api.register_blueprint(blp)
    api.method_endpoints.update(endpoints)
    api.endpoint_methods.update({endpoint: method for method, endpoint in endpoints.items()})


def _command_arguments(spec: MethodSpec, arguments: dict[str, Any]) -> dict[str, Any]:
    """The validated body as a command's arguments (text on the wire, enums by value).

    Only what the caller sent (defaults are the executor's to fill in). A JSON
    null has no text form: it is the parameter's default when that is None,
    and a 422 otherwise.
    """
    sent = request.get_json(silent=True) or {}
    defaults = {p.name: (p.required, p.default) for p in spec.parameters}
    wire: dict[str, Any] = {}
    for name, value in arguments.items():
        if name not in sent:
            continue
        if value is None:
            required, default = defaults.get(name, (True, None))
            if required or default is not None:
                abort(422, message=f"argument {name!r}: null cannot be sent as a command argument (commands "
                                   "carry text); it is accepted only where the parameter's default is None",
                      errors={"json": {name: ["null is accepted only where the default is None"]}})
            continue
        wire[name] = json_default(value)
    return wire


def _method_view(state: OpenFactoryState, spec: MethodSpec) -> Callable[[dict[str, Any]], Any]:
    def invoke(arguments: dict[str, Any]) -> ResponseReturnValue:
        correlation_id = correlation_id_from_request()
        runtime = state.runtime
        if spec.run_anywhere:  # declared safe to run in the receiving process
            busy = runtime.transport.saturated()
            if busy is not None:
                raise busy  # the queue is full: refuse before the method moves anything it could not report
            result = runtime.invoke(spec.name, arguments, sender_uuid=_sender(), correlation_id=correlation_id)
        else:
            try:
                wire = _command_arguments(spec, arguments)
                result = runtime.call(spec.name, wire, sender_uuid=_sender(), correlation_id=correlation_id)
            except CallConflict as exc:
                abort(409, message=str(exc))
        # OK, ERROR or REJECTED (the executor's rules): the log's answer, as any caller gets it. A
        # Response skips the response schema's dump: as_dict has exactly MethodResultSchema's fields.
        return jsonify(result.as_dict()), 200, {CORRELATION_HEADER: result.correlation_id or ""}

    invoke.__name__ = invoke.__qualname__ = f"invoke_{spec.name}"
    invoke.__doc__ = None  # the operation's text comes from blp.doc
    return invoke
