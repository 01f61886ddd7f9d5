"""Gunicorn hooks: start the runtime in each worker, never in the master.

Use as the whole config (``gunicorn -c python:flask_openfactory.gunicorn_conf
wsgi:app``) or import the hooks into your own ``gunicorn.conf.py``:
``from flask_openfactory.gunicorn_conf import post_worker_init, worker_exit, on_exit``.

* ``post_worker_init``: the worker starts its runtime at once, so an idle
  worker still takes part in executing commands; in the background, waiting
  for it at most ``START_WAIT`` seconds: with the broker or the log away the
  worker serves its health probe and retries the start. It watches its master
  (``worker``: an orphan stops executing and releases the socket at once).
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

from flask import Flask

from .runtime.logs import gunicorn_logconfig
from .state import START_WAIT, find_state

log = logging.getLogger("flask_openfactory.gunicorn")

# Defaults for a config module used as is; a user's own config sets its own.
bind = os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{os.environ.get('PORT') or '4000'}"
# Below the 10 s stop grace period of Docker and Swarm: the workers stop within 80 % of it,
# then the master publishes avail=UNAVAILABLE (ON_EXIT_BUDGET) before the orchestrator's SIGKILL.
graceful_timeout = 5
# OPENFACTORY_LOG_FORMAT=json: the master's and workers' own lines are JSON objects too.
logconfig_dict = gunicorn_logconfig() if os.environ.get("OPENFACTORY_LOG_FORMAT", "").strip() == "json" else {}

# What gunicorn refuses itself, before the app sees the request, answering with
# its own HTML page (not configurable): a request line over limit_request_line
# is a 414, a header line over limit_request_field_size or more header fields
# than limit_request_fields a 431, a malformed request a 400. Set explicitly
# (the README states them): the request line at gunicorn's maximum (its default
# is 4094), so that a long URL gets the API's JSON answer up to 8 KiB like a
# header does; headers at gunicorn's defaults.
limit_request_line = 8190
limit_request_field_size = 8190
limit_request_fields = 100
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
        state = find_state(candidate) if isinstance(candidate, Flask) else None
        if state is not None:
            found.append(state)
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
        from .runtime.logs import route_to

        level = str(states[0].runtime_config.get("OPENFACTORY_LOG_LEVEL", "INFO")).upper()
        route_to(list(error_log.handlers), level)  # gunicorn's format carries the pid
    # A worker told to exit (SIGTERM on a reload, max_requests) is no longer alive:
    # from then on it never takes the executor role and hands it over at once.
    from .runtime import gunicorn_deployment

    deployment = gunicorn_deployment(getattr(worker, "ppid", os.getppid()))
    for state in states:
        state.runtime.serve_as(eligible=lambda: bool(getattr(worker, "alive", True)), deployment=deployment)
        state.starter.at_boot = True
        state.starter.kick()  # retries on its own while the broker or the log is away
    for state in states:  # serve once started, as a worker always did; a broker away delays it START_WAIT at most
        state.starter.wait(START_WAIT)
    from .worker import watch_parent

    watch_parent(worker, states)


def worker_exit(server: Any, worker: Any) -> None:
    budget = _stop_budget(float(server.cfg.graceful_timeout))
    # A reload starts the new workers before it stops the old ones: while one of them
    # boots, the executing worker goes on executing until it has taken over.
    linger = budget / 2 if _successor_booting() else 0.0
    for state in _states(getattr(worker, "wsgi", None)):
        if state.runtime.started:  # a start still trying (broker away) holds nothing to hand over
            state.runtime.stop(budget, publish_unavailable=False, linger=linger)


def _successor_booting() -> bool:
    """A sibling worker younger than this one exists (a reload): it will take over."""
    from .runtime import process_start_time

    me, parent = os.getpid(), os.getppid()
    mine = process_start_time(me)
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me]
    except OSError:
        return False
    for pid in pids if mine is not None else []:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
                state, ppid = handle.read().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError, ValueError):
            continue
        started = process_start_time(pid) if ppid == str(parent) and state != "Z" else None
        if started is not None and mine is not None and started > mine:
            return True
    return False


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
