"""A second example: a supervisor app that watches the demo machine.

Written as a user would write an app: it subscribes to the machine's
``position_x``, raises the Condition ``position_x_range`` when the position
leaves ``[SUPERVISOR_X_MIN, SUPERVISOR_X_MAX]``, and commands the machine's
``home()`` once per excursion. Serve it next to the demo with
``gunicorn 'supervisor:create_app()'``.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

import config
from flask_openfactory import ConfigurationError, FlaskOpenFactory

ofa = FlaskOpenFactory()

DEFAULTS: dict[str, Any] = {
    "SUPERVISOR_MACHINE_UUID": "DEV-UUID",  # the demo machine's UUID in development
    "SUPERVISOR_X_MIN": -100.0,
    "SUPERVISOR_X_MAX": 100.0,
}


def create_app(config_name: str | None = None, overrides: dict[str, Any] | None = None) -> Flask:
    name = config_name or os.environ.get("FLASK_CONFIG") or "development"
    app = Flask(__name__, instance_relative_config=True)
    config.load(app, name, overrides)
    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    if not os.environ.get("APP_UUID"):  # deployed by the platform, APP_UUID names it
        app.config.setdefault("OPENFACTORY_APP_UUID", "SUPERVISOR-DEV")
    _check_range(app.config["SUPERVISOR_X_MIN"], app.config["SUPERVISOR_X_MAX"])
    ofa.init_app(app)

    from .watch import watch

    app.register_blueprint(watch)
    return app


def _check_range(low: Any, high: Any) -> None:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if not numbers or not low < high:
        raise ConfigurationError(
            f"SUPERVISOR_X_MIN and SUPERVISOR_X_MAX must be numbers with MIN < MAX, got {low!r} and {high!r}"
        )
