"""The documented fixed routes: health, readiness, attributes, results, method contracts, metrics."""

# (flask-smorest's Blueprint decorators are untyped)

from __future__ import annotations

import os
from typing import Any

from flask import current_app, jsonify, request, url_for
from flask.typing import ResponseReturnValue
from flask_smorest import Blueprint
from webargs.flaskparser import abort  # flask_smorest.abort, typed NoReturn

from ..auth import READ_ROUTE
from ..metrics import INSTALL_HINT
from ..state import OpenFactoryState
from ..transports import Health
from ..wire.methods import MethodSpec
from ..wire.protocol import METHOD
from .access import secured
from .correlation import CORRELATION_PATTERN, canonical_correlation_id
from .guards import guard
from .names import API_BLUEPRINT, log
from .schemas import (
    AttributeQuerySchema,
    AttributeRecordSchema,
    ErrorSchema,
    HealthSchema,
    MethodContractSchema,
    MethodResultSchema,
    PendingCallSchema,
    ReadinessSchema,
)
from .smorest_api import OpenFactoryApi


def api_blueprint(state: OpenFactoryState, api: OpenFactoryApi) -> Blueprint:
    runtime = state.runtime
    blp = Blueprint(
        API_BLUEPRINT,
        __name__,
        url_prefix=state.url_prefix or None,
        description=f"OpenFactory asset {runtime.asset_uuid}",
    )
    guard(blp)
    read = secured(blp, api.access, READ_ROUTE)

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
        cid = canonical_correlation_id(correlation_id, "correlation_id", "path")
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
        return [contract(spec, api) for spec in runtime.methods.values()]

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


def contract(spec: MethodSpec, api: OpenFactoryApi) -> dict[str, Any]:
    endpoint = api.method_endpoints.get(spec.name)
    return {
        "name": spec.name,
        "description": spec.description,
        "signature": spec.signature_text(),
        "url": url_for(endpoint) if endpoint else None,
        "arguments": spec.arguments(),
    }
