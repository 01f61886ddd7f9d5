"""``FlaskOpenFactory``: the extension object, per the Flask extension guide.

``init_app`` validates config and registers views, CLI and hooks; it creates
no thread, socket or client, because every ``flask`` command runs the app
factory and gunicorn's ``--preload`` runs it in the master before forking.
The runtime starts per process, in a thread of its own: from gunicorn's
``post_worker_init`` hook, or on the first request of any kind it serves (the
fallback for other servers, and for gunicorn without the hooks, which is said
once). A broker that is away never holds up the health probe. The per-app
state, and that start on a request, are in ``state``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from .runtime import AssetRuntime
from .runtime.logs import configure_format
from .settings import apply_defaults, flag, log_format, runtime_settings, url_prefix, uuid_conflict
from .settings import root_path as configured_root_path
from .state import EXTENSION_KEY as EXTENSION_KEY
from .state import HEALTH_ENDPOINT as HEALTH_ENDPOINT
from .state import PROBE_ENDPOINTS as PROBE_ENDPOINTS
from .state import RETRY_AFTER as RETRY_AFTER
from .state import START_WAIT as START_WAIT
from .state import OpenFactoryState as OpenFactoryState
from .state import get_state

log = logging.getLogger("flask_openfactory")


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
        apply_defaults(app.config, app.instance_path)
        settings = runtime_settings(app.config)
        prefix = url_prefix(app.config)
        root_path = configured_root_path(app.config)
        if root_path and app.config.get("APPLICATION_ROOT", "/") == "/":
            app.config["APPLICATION_ROOT"] = root_path
        if root_path:  # inside ProxyFix: an X-Forwarded-Prefix still wins
            app.wsgi_app = _RootPath(app.wsgi_app, root_path)  # type: ignore[method-assign]
        if flag(app.config, "OPENFACTORY_PROXY_FIX"):
            app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_prefix=1)  # type: ignore[method-assign]
        logging.getLogger("flask_openfactory").setLevel(
            str(app.config["OPENFACTORY_LOG_LEVEL"]).upper()
        )
        configure_format(log_format(app.config))

        runtime = AssetRuntime(settings, context=app.app_context)
        state = OpenFactoryState(
            self, runtime, prefix, {k: v for k, v in app.config.items() if k.startswith("OPENFACTORY_")}
        )
        state.testing = bool(app.testing)
        conflict = uuid_conflict(app.config)
        if conflict:
            state.warnings.append(conflict)
        app.extensions[EXTENSION_KEY] = state

        if flag(app.config, "OPENFACTORY_START_ON_REQUEST"):
            app.before_request(state.ensure_started)
        app.shell_context_processor(lambda: {"ofa": runtime})
        if self.add_api:
            from .api import add_method_routes, init_api

            state.api = init_api(app, state)
            state.route_methods = functools.partial(add_method_routes, state)
        if self.add_cli:
            from .cli import ofa_cli

            app.cli.add_command(ofa_cli)

    @staticmethod
    def state(app: Flask) -> OpenFactoryState:
        return get_state(app)

    def runtime(self, app: Flask) -> AssetRuntime:
        return self.state(app).runtime


class _RootPath:
    """Serve under ``OPENFACTORY_ROOT_PATH`` whether or not the gateway strips it.

    Behind the platform's gateway without ``X-Forwarded-Prefix`` the app sees
    bare paths but its pages must link under the prefix (``/ofa/docs`` loads
    its assets and spec through ``url_for``); a request that still carries
    the prefix is served too.
    """

    def __init__(self, wsgi_app: Callable[..., Any], root: str) -> None:
        self.wsgi_app = wsgi_app
        self.root = root.rstrip("/")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if self.root and not environ.get("SCRIPT_NAME"):
            path = environ.get("PATH_INFO", "")
            if path == self.root or path.startswith(self.root + "/"):
                environ["PATH_INFO"] = path[len(self.root):]
            environ["SCRIPT_NAME"] = self.root
        return self.wsgi_app(environ, start_response)
