"""The demo app plus probe methods, served by gunicorn in the multi-process tests.

Exactly-once must be checked from outside the server, so each execution
appends one line to a side-effect file (``OFA_TEST_SIDE_EFFECTS``) instead of
counting in memory, which would be per worker and lost with a killed one.
Nothing here is part of the product: gunicorn loads it with
``--pythonpath tests gunicorn_app:create_app()``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask

from demo import create_app as create_demo_app
from flask_openfactory import AssetBlueprint

SIDE_EFFECTS_ENV = "OFA_TEST_SIDE_EFFECTS"

probe = AssetBlueprint("gunicorn_probe", __name__)


def _side_effect(event: str, tag: str) -> None:
    """One ``event tag pid time`` line, written with a single O_APPEND write (no interleaving)."""
    path = os.environ.get(SIDE_EFFECTS_ENV)
    if not path:
        raise RuntimeError(f"{SIDE_EFFECTS_ENV} is not set: the probe has nowhere to record executions")
    line = f"{event} {tag} {os.getpid()} {time.time():.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@probe.ofa_method()
def record(tag: str) -> dict[str, Any]:
    """Record one execution of the command tagged ``tag``."""
    _side_effect("done", tag)
    return {"tag": tag, "pid": os.getpid()}


@probe.ofa_method()
def slow(seconds: float, tag: str = "slow") -> dict[str, Any]:
    """Take ``seconds``, recording when the execution starts and when it ends."""
    _side_effect("start", tag)
    time.sleep(seconds)
    _side_effect("done", tag)
    return {"tag": tag, "pid": os.getpid(), "seconds": seconds}


def create_app() -> Flask:
    """The demo app (config from ``FLASK_CONFIG`` and the environment) with the probe methods."""
    app = create_demo_app()
    app.register_blueprint(probe)
    return app
