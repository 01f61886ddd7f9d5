"""Swagger UI at ``<prefix>/docs``, from the installed ``swagger_ui_bundle`` (no CDN).

Factory networks are often air-gapped. Every URL of the page goes through
``url_for``, so it works behind a path prefix.
"""

from __future__ import annotations

from flask import Blueprint as FlaskBlueprint
from flask import current_app, send_from_directory, url_for
from flask.typing import ResponseReturnValue

from .names import CONFIG_PREFIX, UI_BLUEPRINT
from .smorest_api import OpenFactoryApi


def add_swagger_ui(bp: FlaskBlueprint, api: OpenFactoryApi) -> None:
    """``/docs`` and its static files, on the plain blueprint, when the Api serves its spec."""
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


def _swagger_ui_dir() -> str:
    import swagger_ui_bundle

    return str(swagger_ui_bundle.swagger_ui_path)
