"""The demo asset: a simulated two-axis machine, written as a user writes an app."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

import config
from flask_openfactory import FlaskOpenFactory

ofa = FlaskOpenFactory()


def create_app(config_name: str | None = None, overrides: dict[str, Any] | None = None) -> Flask:
    """The application factory: ``FLASK_CONFIG`` picks the config, default development."""
    name = config_name or os.environ.get("FLASK_CONFIG") or "development"
    app = Flask(__name__, instance_relative_config=True)
    config.load(app, name, overrides)
    ofa.init_app(app)

    from .machine import machine
    from .views import views

    app.register_blueprint(machine)
    app.register_blueprint(views)
    return app
