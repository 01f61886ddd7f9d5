"""``init_api``: put the asset's HTTP API on an app (the ``Api``, its blueprints and hooks)."""

from __future__ import annotations

import functools

from flask import Flask

from ..auth import SCHEME_NAME, AccessPolicy
from ..auth import install as install_access
from ..metrics import app_metrics
from ..settings import argument_limits
from ..state import OpenFactoryState
from .access import route_kind
from .fallbacks import AnyPathConverter, answer_options, ui_blueprint
from .guards import check_max_body, install_transport_handler
from .names import CONFIG_PREFIX, DEFAULT_MAX_BODY
from .routes_fixed import api_blueprint
from .smorest_api import OpenFactoryApi


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
    check_max_body(config[f"{CONFIG_PREFIX}MAX_BODY"])

    access = AccessPolicy.from_config(config)
    api = OpenFactoryApi(app, config_prefix=CONFIG_PREFIX)
    api.access = access
    api.metrics_factory = functools.partial(app_metrics, runtime)
    api.limits = argument_limits(config)
    if access.tokens is not None:
        api.spec.components.security_scheme(SCHEME_NAME, {
            "type": "http", "scheme": "bearer",
            "description": "One of OPENFACTORY_API_TOKENS, as 'Authorization: Bearer <token>'",
        })
    api.spec.tag({"name": "asset", "description": f"State and health of asset {runtime.asset_uuid}"})
    api.spec.tag({"name": "methods", "description": "The asset's methods: contracts and calls"})
    api.register_blueprint(api_blueprint(state, api))
    app.url_map.converters.setdefault("ofa_anypath", AnyPathConverter)  # for the catch-all
    app.register_blueprint(ui_blueprint(state, api))
    install_access(app, access, lambda endpoint: route_kind(api, endpoint))
    install_transport_handler(app)
    if state.url_prefix:
        app.before_request(functools.partial(answer_options, state.url_prefix))
    return api
