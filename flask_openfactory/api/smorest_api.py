"""``OpenFactoryApi``: flask-smorest's ``Api``, kept off the host app and holding the API's per-app data.

It overrides flask-smorest internals: no app-wide error handler, no
per-blueprint OpenAPI tag, a ``servers`` entry behind a path prefix.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, request
from flask import json as flask_json
from flask_smorest import Api, Blueprint
from jinja2 import Environment, PackageLoader
from werkzeug.wrappers import Response

from ..auth import AccessPolicy
from ..metrics import AppMetrics
from ..wire.commands import ArgumentLimits
from .names import METHODS_BLUEPRINT
from .schemas import FIXED_SCHEMA_NAMES, ErrorSchema


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
        self.metrics_factory: Callable[[], AppMetrics | None] = lambda: None  # set by init_api
        self._metrics: AppMetrics | None = None
        self._metrics_built = False
        self._metrics_lock = threading.Lock()
        self.limits = ArgumentLimits()  # OPENFACTORY_MAX_ARGUMENTS / _MAX_COMMAND_BYTES on the method routes
        self.schema_names: set[str] = set(FIXED_SCHEMA_NAMES)
        self.blueprint_count = 0
        self._ui_env: Environment | None = None
        super().__init__(app, **kwargs)

    @property
    def metrics(self) -> AppMetrics | None:
        """The app's metrics registry, None without prometheus-client.

        Built at the first scrape, not in ``init_app``: importing prometheus-client
        costs every worker's boot ~15 ms, and most workers are never scraped.
        """
        if not self._metrics_built:
            with self._metrics_lock:
                if not self._metrics_built:
                    self._metrics = self.metrics_factory()
                    self._metrics_built = True
        return self._metrics

    def schema_ref(self, schema: type[Any]) -> str:
        """The component name of ``schema`` (registered here if new), for a response's ``schema``.

        flask-smorest deep-copies an operation's whole documentation at every decorator; a
        name costs nothing to copy where a schema instance costs its fields: with a schema
        per error response, copying made up ~60 ms of building an app with two methods.
        """
        name = schema.__name__.removesuffix("Schema") or schema.__name__  # as flask-smorest names it
        components = self.spec.components
        if name not in components.schemas and name not in getattr(components, "schemas_lazy", {}):
            components.schema(name, schema=schema)  # else registered by a document that used the class
        return name

    def _register_error_handlers(self) -> None:
        """Nothing app-wide: see ``guards.guard`` for our blueprints."""

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
