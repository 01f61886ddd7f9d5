"""``FlaskOpenFactory``: the extension object, per the Flask extension guide.

``init_app`` validates config and registers views, CLI and hooks; it creates
no thread, socket or client, because every ``flask`` command runs the app
factory and gunicorn's ``--preload`` runs it in the master before forking.
The runtime starts per process: from gunicorn's ``post_worker_init`` hook, or
before the first request it serves (the fallback for other servers).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Iterable

from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix

from . import settings as config_keys
from .attributes import Attribute
from .methods import MethodSpec
from .runtime import AssetRuntime
from .subscriptions import SubscriptionSpec
from .tasks import TaskSpec

log = logging.getLogger("flask_openfactory")

EXTENSION_KEY = "openfactory"
HEALTH_ENDPOINT = "openfactory.health"  # the API blueprint's liveness route


class OpenFactoryState:
    """What one app holds in ``app.extensions["openfactory"]``."""

    def __init__(
        self, extension: "FlaskOpenFactory", runtime: AssetRuntime, url_prefix: str, config: dict[str, Any]
    ) -> None:
        self.extension = extension
        self.runtime_config = config  # the OPENFACTORY_* keys as init_app read them
        self.runtime = runtime
        self.url_prefix = url_prefix
        self.api: Any = None  # the flask-smorest Api that documents /ofa
        self._guard = _StartGuard(runtime)

    def declare(
        self,
        *,
        attributes: Iterable[Attribute] = (),
        methods: Iterable[MethodSpec] = (),
        tasks: Iterable[TaskSpec] = (),
        subscriptions: Iterable[SubscriptionSpec] = (),
    ) -> None:
        methods = list(methods)
        for attribute in attributes:
            self.runtime.declare_attribute(attribute)
        for spec in methods:
            self.runtime.declare_method(spec)
        for task in tasks:
            self.runtime.declare_task(task)
        for subscription in subscriptions:
            self.runtime.declare_subscription(subscription)
        if self.api is not None and methods:
            from .api import add_method_routes

            add_method_routes(self, methods)

    def ensure_started(self) -> None:
        """Before each request; liveness never waits on a start that may be slow or failing."""
        if request.endpoint == HEALTH_ENDPOINT:
            return
        self._guard.ensure()


class _StartGuard:
    """Start once per process, before the first request; fork-aware, backs off on failure."""

    RETRY_AFTER = 5.0

    def __init__(self, runtime: AssetRuntime) -> None:
        self._runtime = runtime
        self._pid = -1
        self._lock = threading.Lock()
        self._failed_at = 0.0

    def ensure(self) -> None:
        if self._runtime.started:
            return
        if self._pid != os.getpid():  # a lock held at fork time stays held in the child
            self._lock, self._pid, self._failed_at = threading.Lock(), os.getpid(), 0.0
        with self._lock:
            if self._runtime.started or time.monotonic() - self._failed_at < self.RETRY_AFTER and self._failed_at:
                return
            try:
                self._runtime.start()
            except Exception:
                self._failed_at = time.monotonic()
                log.exception("the OpenFactory runtime could not start; retrying in %.0fs", self.RETRY_AFTER)


class FlaskOpenFactory:
    """Make a Flask app an OpenFactory asset.

    ``ofa = FlaskOpenFactory()`` at module level, ``ofa.init_app(app)`` in the
    factory; or ``FlaskOpenFactory(app)`` for a single app. Per-app state lives
    in ``app.extensions["openfactory"]``; ``current_openfactory`` reaches it.
    """

    def __init__(self, app: Flask | None = None, *, add_cli: bool = True, add_api: bool = True) -> None:
        self.add_cli = add_cli
        self.add_api = add_api
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "A 'FlaskOpenFactory' instance has already been registered on this Flask app "
                f"{app.import_name!r}. Call 'init_app' once per app."
            )
        config_keys.apply_defaults(app.config, app.instance_path)
        settings = config_keys.runtime_settings(app.config)
        prefix = config_keys.url_prefix(app.config)
        root_path = config_keys.root_path(app.config)
        if root_path and app.config.get("APPLICATION_ROOT", "/") == "/":
            app.config["APPLICATION_ROOT"] = root_path
        if config_keys.flag(app.config, "OPENFACTORY_PROXY_FIX"):
            app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_prefix=1)  # type: ignore[method-assign]
        logging.getLogger("flask_openfactory").setLevel(
            str(app.config["OPENFACTORY_LOG_LEVEL"]).upper()
        )

        runtime = AssetRuntime(settings, context=app.app_context)
        state = OpenFactoryState(
            self, runtime, prefix, {k: v for k, v in app.config.items() if k.startswith("OPENFACTORY_")}
        )
        app.extensions[EXTENSION_KEY] = state

        if config_keys.flag(app.config, "OPENFACTORY_START_ON_REQUEST"):
            app.before_request(state.ensure_started)
        app.shell_context_processor(lambda: {"ofa": runtime})
        if self.add_api:
            from .api import init_api

            state.api = init_api(app, state)
        if self.add_cli:
            from .cli import ofa_cli

            app.cli.add_command(ofa_cli)

    @staticmethod
    def state(app: Flask) -> OpenFactoryState:
        state = app.extensions.get(EXTENSION_KEY)
        if state is None:
            raise RuntimeError(
                f"The Flask app {app.import_name!r} is not registered with FlaskOpenFactory. "
                "Did you forget to call 'ofa.init_app(app)'?"
            )
        return state  # type: ignore[no-any-return]

    def runtime(self, app: Flask) -> AssetRuntime:
        return self.state(app).runtime
