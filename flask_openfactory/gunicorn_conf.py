"""Gunicorn hooks: start the runtime in each worker, never in the master.

Use as the whole config (``gunicorn -c python:flask_openfactory.gunicorn_conf
wsgi:app``) or import the hooks into your own ``gunicorn.conf.py``:
``from flask_openfactory.gunicorn_conf import post_worker_init, worker_exit, on_exit``.

* ``post_worker_init``: the worker starts its runtime at once, so an idle
  worker still takes part in executing commands; in the background, waiting
  for it at most ``START_WAIT`` seconds: with the broker away the worker serves
  its health probe and retries the start.
* ``worker_exit``: graceful stop (command in flight finishes, result
  delivered, offsets committed, flush) without publishing ``UNAVAILABLE``:
  availability belongs to the server, not to one worker.
* ``on_exit``: the master publishes ``avail=UNAVAILABLE`` once, with a client
  it creates after its workers are gone.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .extension import START_WAIT
from .logs import gunicorn_logconfig

log = logging.getLogger("flask_openfactory.gunicorn")

# Defaults for a config module used as is; a user's own config sets its own.
bind = os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{os.environ.get('PORT') or '4000'}"
# Below the 10 s stop grace period of Docker and Swarm: the workers stop within 80 % of it,
# then the master publishes avail=UNAVAILABLE (ON_EXIT_BUDGET) before the orchestrator's SIGKILL.
graceful_timeout = 5
# OPENFACTORY_LOG_FORMAT=json: the master's and workers' own lines are JSON objects too.
logconfig_dict = gunicorn_logconfig() if os.environ.get("OPENFACTORY_LOG_FORMAT", "").strip() == "json" else {}
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
    for state in states:
        state.starter.at_boot = True
        state.starter.kick()  # retries on its own while the broker is away
    for state in states:  # serve once started, as a worker always did; a broker away delays it START_WAIT at most
        state.starter.wait(START_WAIT)


def worker_exit(server: Any, worker: Any) -> None:
    budget = _stop_budget(float(server.cfg.graceful_timeout))
    for state in _states(getattr(worker, "wsgi", None)):
        if state.runtime.started:  # a start still trying (broker away) holds nothing to hand over
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
            runtime.set("avail", "UNAVAILABLE")
            if runtime.transport.flush(ON_EXIT_BUDGET):
                log.error("avail=UNAVAILABLE not delivered before exit")
            runtime.transport.close(1.0)
        except Exception:
            log.exception("could not publish avail=UNAVAILABLE")
