"""The apps under test: the extension's app, a plain Flask app, and in-process assets.

``ext_app`` is the repository's own production app (``demo.create_app``,
configured from the environment the platform sets) plus the same user route
as ``plain_app``, so the HTTP comparison differs only by the extension.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, jsonify
from flask.typing import ResponseReturnValue

USER_ROUTE = "/hello"
TRIVIAL_METHOD = "ping"


def _user_blueprint() -> Blueprint:
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
    app.register_blueprint(_user_blueprint())
    return app


def ext_app() -> Flask:
    """The demo app in production config (KAFKA_BROKER, APP_UUID, SECRET_KEY) plus the user route."""
    from demo import create_app
    from flask_openfactory import AssetBlueprint

    app = create_app("production")
    app.register_blueprint(_user_blueprint())
    methods = AssetBlueprint("bench_methods", __name__)

    @methods.ofa_method(name=TRIVIAL_METHOD)
    def ping() -> str:
        """Answer at once: measures the method route and the command path, not the method."""
        return "pong"

    app.register_blueprint(methods)
    return app


def _generated_method(index: int) -> Callable[[], int]:
    def method() -> int:
        return index

    method.__name__ = method.__qualname__ = f"method_{index}"
    method.__doc__ = f"Generated method {index}."
    return method


def attribute_ids(count: int) -> list[tuple[str, str]]:
    """(ID, TAG) of the attributes ``asset_app`` declares: raw baselines write the same records."""
    return [(f"value_{i}", f"Bench.Value{i}") for i in range(count)]


def asset_app(
    *,
    bootstrap: str,
    topic: str,
    asset_uuid: str,
    lock_dir: str,
    attributes: int = 5,
    methods: int = 2,
    election: str = "lock",
    kafka_config: dict[str, Any] | None = None,
) -> tuple[Flask, list[Any]]:
    """An app with ``attributes`` sample attributes and ``methods`` methods on Kafka.

    Returns the app and its attribute declarations (set through the public API).
    """
    from flask_openfactory import AssetBlueprint, FlaskOpenFactory, SampleAttribute

    from .common import KAFKA_CONFIG

    app = Flask(f"bench_asset_{asset_uuid}")
    app.config.update(
        SECRET_KEY="bench-only",
        OPENFACTORY_APP_UUID=asset_uuid,
        OPENFACTORY_TRANSPORT_URL=f"kafka://{bootstrap}",
        OPENFACTORY_ASSETS_TOPIC=topic,
        OPENFACTORY_KAFKA_CONFIG=dict(kafka_config if kafka_config is not None else KAFKA_CONFIG),
        OPENFACTORY_KAFKA_ELECTION=election,
        OPENFACTORY_LOCK_DIR=lock_dir,
        OPENFACTORY_LOG_LEVEL="WARNING",
    )
    FlaskOpenFactory(app)
    bp = AssetBlueprint("bench_asset", __name__)
    declared = [
        bp.attribute(SampleAttribute(attr_id, tag=tag, default=0.0)) for attr_id, tag in attribute_ids(attributes)
    ]
    for i in range(methods):
        bp.ofa_method(name=f"method_{i}")(_generated_method(i))
    app.register_blueprint(bp)
    return app, declared
