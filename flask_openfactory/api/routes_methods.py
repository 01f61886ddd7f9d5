"""One documented ``POST <prefix>/methods/<name>`` route per method of the asset."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from flask import jsonify, request
from flask.typing import ResponseReturnValue
from webargs.flaskparser import abort  # flask_smorest.abort, typed NoReturn

from ..auth import METHOD_ROUTE
from ..runtime.calls import CallConflict
from ..state import OpenFactoryState
from ..wire.methods import MethodSpec, json_default
from .access import secured
from .correlation import CORRELATION_HEADER, HEADER_PARAMETERS, correlation_id_from_request, sender
from .fields import arguments_schema
from .guards import guard, read_json_body
from .names import log
from .parsing import MethodBlueprint
from .schemas import ErrorSchema, MethodResultSchema, PendingErrorSchema
from .smorest_api import OpenFactoryApi

# Method names usable verbatim in a URL rule (werkzeug parses "<" and ">").
_ROUTABLE_NAME = re.compile(r"[\w\-~]+")


def _camel(name: str) -> str:
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", name) if p]
    text = "".join(p[:1].upper() + p[1:] for p in parts) or "Method"
    return text if text[0].isalpha() else f"Method{text}"


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
    blp = MethodBlueprint(
        name,
        __name__,
        url_prefix=state.url_prefix or None,
        description="Methods: " + ", ".join(s.name for s in routable),
    )
    guard(blp)
    blp.before_request(lambda: read_json_body(api.limits))
    endpoints: dict[str, str] = {}
    error, pending_error = api.schema_ref(ErrorSchema), api.schema_ref(PendingErrorSchema)
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
        view = blp.alt_response(504, schema=pending_error, description=(
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
            view = blp.alt_response(code, schema=error, description=why)(view)
        view = secured(blp, api.access, METHOD_ROUTE)(view)
        view = blp.doc(summary=spec.signature_text(), description=spec.description or spec.name)(view)
        blp.route(f"/methods/{spec.name}", endpoint=endpoint, methods=["POST"], tags=["methods"],
                  parameters=[dict(p) for p in HEADER_PARAMETERS])(view)
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
            result = runtime.invoke(spec.name, arguments, sender_uuid=sender(), correlation_id=correlation_id)
        else:
            try:
                wire = _command_arguments(spec, arguments)
                result = runtime.call(spec.name, wire, sender_uuid=sender(), correlation_id=correlation_id)
            except CallConflict as exc:
                abort(409, message=str(exc))
        # OK, ERROR or REJECTED (the executor's rules): the log's answer, as any caller gets it. A
        # Response skips the response schema's dump: as_dict has exactly MethodResultSchema's fields.
        return jsonify(result.as_dict()), 200, {CORRELATION_HEADER: result.correlation_id or ""}

    invoke.__name__ = invoke.__qualname__ = f"invoke_{spec.name}"
    invoke.__doc__ = None  # the operation's text comes from blp.doc
    return invoke
