"""Gunicorn hooks: start the runtime in each worker, never in the master.

Use as the whole config (``gunicorn -c python:flask_openfactory.gunicorn_conf
wsgi:app``) or import the hooks into your own ``gunicorn.conf.py``:
``from flask_openfactory.gunicorn_conf import post_worker_init, worker_exit, on_exit``.

* ``post_worker_init``: the worker starts its runtime at once, so an idle
  worker still takes part in executing commands.
* ``worker_exit``: graceful stop (command in flight finishes, result
  delivered, offsets committed, flush) without publishing ``UNAVAILABLE``:
  availability belongs to the server, not to one worker.
* ``on_exit``: the master publishes ``avail=UNAVAILABLE`` once, with a client
  it creates after its workers are gone, unless another server on this host
  still serves the asset.

The start-up records are written once per start of the server: the workers
name the master as their deployment, and the first to start announces.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("flask_openfactory.gunicorn")

# Defaults for a config module used as is; a user's own config sets its own.
bind = os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{os.environ.get('PORT') or '4000'}"
graceful_timeout = 30
# A method call over HTTP waits a round trip through the log: a sync worker would be
# blocked for it (measured: 2 sync workers ~140 calls/s on Kafka). Threads overlap the
# waits, and keep-alive spares a TCP accept and close per request (bench/README.md).
worker_class = "gthread"
threads = 8
keepalive = 5
ON_EXIT_BUDGET = 3.0  # seconds the master spends publishing avail=UNAVAILABLE after its workers


def _states(wsgi: Any) -> list[Any]:
    """The OpenFactory state of the served app (looking through common wrappers)."""
    seen = set()
    found = []
    candidate = wsgi
    while candidate is not None and id(candidate) not in seen:
        seen.add(id(candidate))
        extensions = getattr(candidate, "extensions", None)
        if isinstance(extensions, dict) and "openfactory" in extensions:
            found.append(extensions["openfactory"])
            break
        candidate = getattr(candidate, "app", None) or getattr(candidate, "wsgi_app", None)
    return found


def _stop_budget(graceful: float) -> float:
    """Leave the worker time to exit before gunicorn's SIGKILL."""
    return max(1.0, min(graceful * 0.8, graceful - 2.0))


def post_worker_init(worker: Any) -> None:
    states = _states(worker.wsgi)
    error_log = getattr(getattr(worker, "log", None), "error_log", None)
    if states and error_log is not None:
        from .logs import route_to

        level = str(states[0].runtime_config.get("OPENFACTORY_LOG_LEVEL", "INFO")).upper()
        route_to(list(error_log.handlers), level)  # gunicorn's format carries the pid
    # A worker told to exit (SIGTERM on a reload, max_requests) is no longer alive:
    # from then on it never takes the executor role and hands it over at once.
    from .runtime import gunicorn_deployment

    deployment = gunicorn_deployment(getattr(worker, "ppid", os.getppid()))
    for state in states:
        try:
            state.runtime.start(eligible=lambda: bool(getattr(worker, "alive", True)), deployment=deployment)
        except Exception:
            log.exception("worker %s: runtime did not start; the first request will retry", os.getpid())


def worker_exit(server: Any, worker: Any) -> None:
    budget = _stop_budget(float(server.cfg.graceful_timeout))
    for state in _states(getattr(worker, "wsgi", None)):
        state.runtime.stop(budget, publish_unavailable=False)


def on_exit(server: Any) -> None:
    try:
        app = server.app.wsgi()
    except Exception:
        log.exception("could not load the app to publish avail=UNAVAILABLE")
        return
    for state in _states(app):
        runtime = state.runtime
        try:  # bounded: the orchestrator's grace period is running out
            runtime.close_deployment(ON_EXIT_BUDGET)
            runtime.transport.close(1.0)
        except Exception:
            log.exception("could not publish avail=UNAVAILABLE")
