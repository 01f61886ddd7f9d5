"""What every blueprint of ours does before and after its views: JSON errors and body limits.

Attached per blueprint (``guard``), never app-wide, so that the host app
keeps its own error pages; the one app-wide handler (our transport errors:
a full queue, an unreachable log, a stopped runtime) is installed only when
the app has none of its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from flask import Blueprint as FlaskBlueprint
from flask import Flask, current_app, jsonify, request, url_for
from flask.typing import ResponseReturnValue
from webargs.flaskparser import abort  # flask_smorest.abort, typed NoReturn
from werkzeug.exceptions import HTTPException, MethodNotAllowed, default_exceptions

from ..runtime import CallPending
from ..state import get_state
from ..transports import ConfigurationError, TransportBusy, TransportError
from ..wire.commands import ArgumentLimits
from .correlation import CORRELATION_HEADER
from .names import API_BLUEPRINT, CONFIG_PREFIX, DEFAULT_MAX_BODY


def install_transport_handler(app: Flask) -> None:
    """The host app's own routes that set or read attributes answer our transport errors with 503 JSON too.

    A full outgoing queue, an unreachable log, a read that cannot catch up, a
    runtime already stopped in this process: the client may retry, it is not a
    bug of the app (a 500). Only for our own exceptions, and only if the app has
    no handler for them yet (one it registers later, for ``TransportError`` or a
    subclass, takes precedence): its other error pages stay its own.
    """
    handlers = app.error_handler_spec.get(None, {}).get(None, {})
    if not any(isinstance(kind, type) and issubclass(kind, TransportError) for kind in handlers):
        app.register_error_handler(TransportError, _transport_error)
        app.register_error_handler(CallPending, _call_pending)  # a call through the runtime: 504, not lost


def check_max_body(value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ConfigurationError(f"OPENFACTORY_MAX_BODY must be a byte count (int >= 0) or None, got {value!r}")


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
    """The log is unreachable, its outgoing queue is full or this process stopped: retry later, not our bug.

    A full queue (``TransportBusy``) is counted (``openfactory_busy_refusals_total``);
    it and a stopped runtime say when to retry: nothing of the request was queued.
    """
    body = {"code": 503, "status": "Service Unavailable", "message": str(error)}
    if isinstance(error, TransportBusy):
        get_state(current_app).runtime.counters.add("busy_refusals")
    retry_after = error.retry_after
    if retry_after is None:
        return jsonify(body), 503
    return jsonify(body), 503, {"Retry-After": str(max(1, math.ceil(retry_after)))}


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


def read_json_body(limits: ArgumentLimits) -> None:
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


def guard(blueprint: FlaskBlueprint) -> FlaskBlueprint:
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

