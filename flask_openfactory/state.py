"""The per-app state of the extension, and the one way to reach it: ``get_state(app)``.

``FlaskOpenFactory.init_app`` puts an ``OpenFactoryState`` in
``app.extensions["openfactory"]``; the HTTP API, the blueprints and the CLI
read it from there. It lives below both the extension and the API, so that
they reach it without importing each other. It also starts the runtime on
the first request (``ensure_started``) when no server hook did.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from flask import Flask, request

from .runtime import AssetRuntime
from .runtime.attributes import Attribute
from .runtime.logs import route_to
from .runtime.subscriptions import SubscriptionSpec
from .runtime.tasks import TaskSpec
from .transports import ConfigurationError
from .wire.methods import MethodSpec

if TYPE_CHECKING:  # flask-smorest is imported only by an app that adds the API
    from flask_smorest import Api

log = logging.getLogger("flask_openfactory")

EXTENSION_KEY = "openfactory"
HEALTH_ENDPOINT = "openfactory.health"  # the API blueprint's liveness route
PROBE_ENDPOINTS = frozenset({HEALTH_ENDPOINT, "openfactory.ready"})  # they never wait on a start


def find_state(app: Flask) -> OpenFactoryState | None:
    """The app's ``OpenFactoryState``, or None when ``init_app`` was not called on it."""
    return app.extensions.get(EXTENSION_KEY)


def get_state(app: Flask) -> OpenFactoryState:
    """The app's ``OpenFactoryState``; a RuntimeError when ``init_app`` was not called on it."""
    state: OpenFactoryState | None = app.extensions.get(EXTENSION_KEY)  # not find_state: every set() comes here
    if state is None:
        raise RuntimeError(
            f"The Flask app {app.import_name!r} is not registered with FlaskOpenFactory. "
            "Did you forget to call 'ofa.init_app(app)'?"
        )
    return state


class OpenFactoryState:
    """What one app holds in ``app.extensions["openfactory"]``."""

    def __init__(
        self, extension: object, runtime: AssetRuntime, url_prefix: str, config: dict[str, Any]
    ) -> None:
        self.extension = extension  # the FlaskOpenFactory that made it (typed loosely: it imports this module)
        self.runtime_config = config  # the OPENFACTORY_* keys as init_app read them
        self.runtime = runtime
        self.url_prefix = url_prefix
        # the flask-smorest Api that documents /ofa (an api.OpenFactoryApi: this module sits below api/)
        self.api: Api | None = None
        # with the Api: adds the HTTP routes of methods declared later (the extension sets it)
        self.route_methods: Callable[[list[MethodSpec]], None] | None = None
        self.warnings: list[str] = []  # shown at start and by `flask ofa status`
        self.testing = False
        self.starter = _Starter(runtime, self.warnings)

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
        if self.api is not None and self.route_methods is not None and methods:
            self.route_methods(methods)

    def use_transport(self, url: str) -> None:
        """Replace the transport before anything used it (the test plugin's isolation)."""
        if self.runtime.transport_created:
            raise RuntimeError(
                f"asset {self.runtime.asset_uuid!r} already opened {self.runtime.settings.transport_url}: "
                "its transport can no longer be replaced"
            )
        self.runtime.settings = replace(self.runtime.settings, transport_url=url)
        self.runtime_config["OPENFACTORY_TRANSPORT_URL"] = url

    def ensure_started(self) -> None:
        """Before every request, the health probe included: the first one starts the runtime.

        Liveness and readiness never wait on the start (a broker may be away);
        other requests wait for a start in progress, at most ``START_WAIT``.
        """
        if self.runtime.started:
            return
        if self.runtime.stop_requested:  # the process stops it (exit, SIGTERM): no request starts it again
            if request.endpoint not in PROBE_ENDPOINTS and _needs_transport(request.endpoint):
                self._refuse(f"asset {self.runtime.asset_uuid} was stopped in this process (pid {os.getpid()}): it "
                             "answers no reads or calls until started again; retry (another worker or the restarted "
                             "server answers)")
            return
        if self.starter.kick() and not self.starter.at_boot and not self.testing:
            if "gunicorn.arbiter" in sys.modules:  # no hooks routed our lines: gunicorn's error log
                route_to(list(logging.getLogger("gunicorn.error").handlers),
                         str(self.runtime_config.get("OPENFACTORY_LOG_LEVEL", "INFO")).upper())
            _warn_started_on_request(self.runtime.asset_uuid, request.method, request.path)
        if request.endpoint in PROBE_ENDPOINTS or self.starter.wait(START_WAIT):
            return
        if _needs_transport(request.endpoint):  # a 503 in time, not a 500 after the broker's timeouts
            self._refuse(f"asset {self.runtime.asset_uuid} is not started yet: "
                         f"{self.runtime.start_error or 'starting'}")

    @staticmethod
    def _refuse(message: str) -> None:
        """A 503 in time, with when to retry (``abort`` raises)."""
        from flask_smorest import abort

        abort(503, message=message, headers={"Retry-After": str(RETRY_AFTER)})


START_WAIT = 2.0  # seconds a request waits for the first start attempt (memory, sqlite, a live broker: less)
RETRY_AFTER = 5  # seconds, told to a client refused while the runtime cannot start


def _needs_transport(endpoint: str | None) -> bool:
    """Our routes that read or write the asset's log (the others answer without it)."""
    return endpoint in ("openfactory.attributes", "openfactory.attribute") or (
        endpoint or "").startswith("openfactory_methods")


def _warn_started_on_request(asset_uuid: str, method: str, path: str) -> None:
    if "gunicorn.arbiter" in sys.modules:  # a gunicorn worker: say it once per server
        if not _first_worker_to_say(asset_uuid):
            return
        how = ("serve with 'gunicorn -c python:flask_openfactory.gunicorn_conf ...' or import its "
               "post_worker_init, worker_exit and on_exit into your gunicorn.conf.py")
        log.warning("gunicorn runs without flask_openfactory's hooks: asset %s starts on each worker's first "
                    "request (here %s %s) and no command runs before one; to start at boot, %s",
                    asset_uuid, method, path, how)
        return
    log.warning("asset %s started on the first request (%s %s): no command runs before one; to start at "
                "boot, call ofa.runtime(app).start() after creating the app (under gunicorn, use "
                "-c python:flask_openfactory.gunicorn_conf)", asset_uuid, method, path)


def _first_worker_to_say(asset_uuid: str) -> bool:
    """One worker of a gunicorn server (the same parent) says it; a marker file decides which."""
    digest = hashlib.sha256(asset_uuid.encode("utf-8")).hexdigest()[:16]
    marker = os.path.join(tempfile.gettempdir(), f"flask-openfactory-nohooks-{os.getppid()}-{digest}")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    except OSError:
        return True  # no marker possible: saying it twice beats never
    return True


class _Starter:
    """Start the runtime once per process, in a thread of its own, retrying while the start fails.

    Fork-aware. A broker that is away is transient (retry with a growing
    pause, one line per failure); a ConfigurationError is permanent (one
    error, no retry): the setting must change.
    """

    MIN_PAUSE = 1.0
    MAX_PAUSE = 30.0

    def __init__(self, runtime: AssetRuntime, warnings: list[str]) -> None:
        self._runtime = runtime
        self._warnings = warnings
        self._pid = -1
        self.at_boot = False  # a gunicorn hook (or the app) started it before any request

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._attempted = threading.Event()  # the current thread's first attempt ended
        self._waited_out = False  # a request waited for the attempt in vain: the next ones do not
        self._permanent = False  # a ConfigurationError: retrying cannot help

    def kick(self) -> bool:
        """Start in the background unless under way or stopped; True the first time in this process."""
        if self._pid != os.getpid():  # a lock held at fork time stays held in the child
            self._reset()
        if self._runtime.stop_requested:  # the process is stopping it (exit, SIGTERM): final for requests
            return False
        with self._lock:
            first = self._thread is None
            if not first and (self._thread.is_alive() or self._permanent):  # type: ignore[union-attr]  # not first: set
                return False
            self._attempted, self._waited_out = threading.Event(), False
            self._thread = threading.Thread(target=self._run, args=(self._attempted, first),
                                            name="ofa-start", daemon=True)
            self._thread.start()
            return first

    def wait(self, timeout: float) -> bool:
        """Wait for the first attempt to end (one request in vain at most); True when started."""
        if self._pid == os.getpid() and not self._waited_out and not self._attempted.wait(timeout):
            self._waited_out = True
        return self._runtime.started

    def _run(self, attempted: threading.Event, first: bool) -> None:
        runtime = self._runtime
        pause = self.MIN_PAUSE
        if first:
            for warning in self._warnings:
                runtime.log.warning("%s", warning)
        try:
            while not runtime.started:
                try:
                    runtime.start()
                    return  # started: a stop() from now on (process exit) is final, not a failure to retry
                except ConfigurationError as exc:
                    self._permanent = True
                    runtime.log.error("cannot start: %s", exc)
                    return
                except Exception as exc:
                    runtime.log.warning("could not start (%s: %s); retrying in %.0fs",
                                        type(exc).__name__, exc, pause)
                    runtime.log.debug("start failure", exc_info=True)
                    attempted.set()
                    time.sleep(pause)
                    pause = min(pause * 2, self.MAX_PAUSE)
                    if runtime.stop_requested:  # stopped meanwhile (process exit, a test's teardown)
                        return
        finally:
            attempted.set()
