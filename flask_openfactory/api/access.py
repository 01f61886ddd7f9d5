"""Which of our endpoints access control guards, and how the OpenAPI document says so.

The checks themselves are in ``flask_openfactory.auth``; this maps our
endpoints to its route kinds and documents the bearer requirement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import request
from flask_smorest import Blueprint

from ..auth import METHOD_ROUTE, READ_ROUTE, AccessPolicy, security_doc
from .names import API_BLUEPRINT, UI_BLUEPRINT
from .schemas import ErrorSchema
from .smorest_api import OpenFactoryApi


def route_kind(api: OpenFactoryApi, endpoint: str | None) -> tuple[str, str | None] | None:
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


def secured(blp: Blueprint, access: AccessPolicy, kind: str) -> Callable[[Any], Any]:
    """Document the bearer requirement (and its 401/403) on operations that have one."""
    doc = security_doc(access, kind)

    def decorate(view: Any) -> Any:
        if not doc:
            return view
        view = blp.alt_response(401, schema=ErrorSchema, description="No or malformed bearer token")(view)
        view = blp.alt_response(403, schema=ErrorSchema, description="Token not valid, or refused")(view)
        return blp.doc(**doc)(view)

    return decorate
