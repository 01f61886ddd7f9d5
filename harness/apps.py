"""The served apps of the HTTP benchmarks and the soak: the repository's app and its plain baseline.

``ext_app`` is the repository's own production app (``demo.create_app``,
configured from the environment the platform sets) plus the same user route
as ``plain_app``, so the HTTP comparison differs only by the extension.
gunicorn loads them as ``harness.apps:ext_app()`` and ``harness.apps:plain_app()``.
"""

from __future__ import annotations

import os

from flask import Blueprint, Flask, jsonify
from flask.typing import ResponseReturnValue

__all__ = ["TRIVIAL_METHOD", "USER_ROUTE", "ext_app", "plain_app", "user_blueprint"]

USER_ROUTE = "/hello"
TRIVIAL_METHOD = "ping"


def user_blueprint() -> Blueprint:
    """A plain JSON route, as a host app has many of; identical in both apps."""
    user = Blueprint("bench_user", __name__)

    @user.get(USER_ROUTE)
    def hello() -> ResponseReturnValue:
        return jsonify(message="hello", items=[1, 2, 3], ok=True)

    return user


def plain_app() -> Flask:
    """The baseline: Flask without the extension, same route, same server settings.

    It takes the same ``SECRET_KEY`` as the production config: with a key,
    Flask opens the signed session cookie on every request (about 25 µs),
    a cost of the app's config, not of the extension.
    """
    app = Flask(__name__)
    app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY")
    app.register_blueprint(user_blueprint())
    return app


def ext_app() -> Flask:
    """The demo app in production config (KAFKA_BROKER, APP_UUID, SECRET_KEY) plus the user route."""
    from demo import create_app
    from flask_openfactory import AssetBlueprint

    app = create_app("production")
    app.register_blueprint(user_blueprint())
    methods = AssetBlueprint("bench_methods", __name__)

    @methods.ofa_method(name=TRIVIAL_METHOD)
    def ping() -> str:
        """Answer at once: measures the method route and the command path, not the method."""
        return "pong"

    app.register_blueprint(methods)
    return app
