"""The one app factory the tests share: a Flask app, its config, the extension and its blueprints.

Test files differ only in what they put in: their own blueprint over their own module-level
state, their config defaults, a hook that adds host routes before the extension, and the
extension's options. Building the app is the same sequence everywhere, so it lives here once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import Blueprint, Flask

from flask_openfactory import FlaskOpenFactory


def build_app_and_extension(
    import_name: str,
    config: Mapping[str, Any] | None = None,
    *,
    blueprints: Iterable[Blueprint] = (),
    before_extension: Callable[[Flask], object] | None = None,
    constructor: bool = False,
    add_api: bool = True,
    add_cli: bool = True,
) -> tuple[Flask, FlaskOpenFactory]:
    """``Flask(import_name)`` with ``config``, ``before_extension(app)`` (host routes, say), the extension
    (``FlaskOpenFactory(app, ...)`` if ``constructor``, else ``FlaskOpenFactory(...).init_app(app)``),
    then ``blueprints`` registered in order. Returns the app and the extension instance."""
    app = Flask(import_name)
    app.config.update(config or {})
    if before_extension is not None:
        before_extension(app)
    if constructor:
        ofa = FlaskOpenFactory(app, add_cli=add_cli, add_api=add_api)
    else:
        ofa = FlaskOpenFactory(add_cli=add_cli, add_api=add_api)
        ofa.init_app(app)
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    return app, ofa


def build_app(
    import_name: str,
    config: Mapping[str, Any] | None = None,
    *,
    blueprints: Iterable[Blueprint] = (),
    before_extension: Callable[[Flask], object] | None = None,
    constructor: bool = False,
    add_api: bool = True,
    add_cli: bool = True,
) -> Flask:
    """:func:`build_app_and_extension` for the tests that need only the app."""
    app, _ = build_app_and_extension(import_name, config, blueprints=blueprints, before_extension=before_extension,
                                    constructor=constructor, add_api=add_api, add_cli=add_cli)
    return app
