"""Config classes of this repository's app, selected by name.

``development`` (default): the embedded sqlite transport in the instance folder.
``testing``: an in-process memory transport, unique per app.
``production``: Kafka, from the OpenFactory platform's environment (which the
extension reads); refuses to start without what it needs (no fallback secret).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from flask import Flask

from flask_openfactory import ConfigurationError


class Config:
    SECRET_KEY: str | None = None
    OPENFACTORY_CONFIG_NAME = "base"

    @classmethod
    def init_app(cls, app: Flask) -> None:
        """Values that depend on the environment or must be unique per app."""


class DevelopmentConfig(Config):
    OPENFACTORY_CONFIG_NAME = "development"
    SECRET_KEY = "development-only-not-secret"


class TestingConfig(Config):
    OPENFACTORY_CONFIG_NAME = "testing"
    TESTING = True
    SECRET_KEY = "testing-only-not-secret"

    @classmethod
    def init_app(cls, app: Flask) -> None:
        app.config.setdefault("OPENFACTORY_TRANSPORT_URL", f"memory://testing-{uuid.uuid4()}")


class ProductionConfig(Config):
    OPENFACTORY_CONFIG_NAME = "production"
    REQUIRED = ("KAFKA_BROKER", "APP_UUID", "SECRET_KEY")

    @classmethod
    def init_app(cls, app: Flask) -> None:
        missing = [name for name in cls.REQUIRED if not os.environ.get(name)]
        if missing:
            raise ConfigurationError(
                "the production config needs the environment variable(s) "
                + ", ".join(missing)
                + " (set by the OpenFactory platform when it deploys the app)"
            )
        app.config["SECRET_KEY"] = os.environ["SECRET_KEY"]  # the transport: KAFKA_BROKER, read by the extension


CONFIGS: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def get_config(name: str) -> type[Config]:
    try:
        return CONFIGS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown config {name!r}; choose one of {', '.join(CONFIGS)} (FLASK_CONFIG)"
        ) from None


def load(app: Flask, name: str, overrides: dict[str, Any] | None = None) -> None:
    """Class, then ``FLASK_*`` environment, then the settings file, then overrides."""
    config_class = get_config(name)
    app.config.from_object(config_class)
    app.config.from_prefixed_env()
    app.config.from_envvar("OPENFACTORY_SETTINGS", silent=True)
    if overrides:
        app.config.update(overrides)
    config_class.init_app(app)
