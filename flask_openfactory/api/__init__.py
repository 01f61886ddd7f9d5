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
answered by ``fallbacks.answer_options`` instead, with exactly what the route serves.
With an empty prefix (``OPENFACTORY_URL_PREFIX="/"``) there is no catch-all,
which would swallow the host app's own 404 pages: routing errors are then the
host app's. What gunicorn refuses before the app sees it (an oversize request
line or header, a malformed request) is gunicorn's own answer.

Modules, after flask-smorest's own layout: ``smorest_api`` (the ``Api``),
``install`` (``init_api``), ``schemas``, ``fields`` (annotation -> field),
``parsing`` (the webargs parser), ``guards`` (JSON errors, body limits),
``access`` (endpoints -> access kinds), ``correlation`` (call headers),
``routes_fixed``, ``routes_methods``, ``docs`` (Swagger UI) and
``fallbacks`` (JSON 404/405, ``OPTIONS``).
"""

from .correlation import (
    CORRELATION_EXAMPLE,
    CORRELATION_HEADER,
    CORRELATION_PATTERN,
    DEFAULT_SENDER,
    SENDER_HEADER,
    correlation_id_from_request,
)
from .fallbacks import AnyPathConverter
from .fields import arguments_schema
from .install import init_api
from .names import API_BLUEPRINT, CONFIG_PREFIX, DEFAULT_MAX_BODY, METHODS_BLUEPRINT, UI_BLUEPRINT, log
from .routes_methods import add_method_routes
from .schemas import (
    AttributeQuerySchema,
    AttributeRecordSchema,
    ErrorSchema,
    HealthSchema,
    MethodArgumentSchema,
    MethodContractSchema,
    MethodResultSchema,
    PendingCallSchema,
    PendingErrorSchema,
    ReadinessCheckSchema,
    ReadinessSchema,
)
from .smorest_api import OpenFactoryApi

__all__ = [
    "API_BLUEPRINT",
    "CONFIG_PREFIX",
    "CORRELATION_EXAMPLE",
    "CORRELATION_HEADER",
    "CORRELATION_PATTERN",
    "DEFAULT_MAX_BODY",
    "DEFAULT_SENDER",
    "METHODS_BLUEPRINT",
    "SENDER_HEADER",
    "UI_BLUEPRINT",
    "AnyPathConverter",
    "AttributeQuerySchema",
    "AttributeRecordSchema",
    "ErrorSchema",
    "HealthSchema",
    "MethodArgumentSchema",
    "MethodContractSchema",
    "MethodResultSchema",
    "OpenFactoryApi",
    "PendingCallSchema",
    "PendingErrorSchema",
    "ReadinessCheckSchema",
    "ReadinessSchema",
    "add_method_routes",
    "arguments_schema",
    "correlation_id_from_request",
    "init_api",
    "log",
]
