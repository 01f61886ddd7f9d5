"""The demo app plus background tasks, served by gunicorn in tests/test_gunicorn_tasks.py.

Which worker runs a task must be seen from outside the server, so every task
writes what it does as attributes of the asset, carrying its pid: a
heartbeat every 100 ms (``"<pid> <count>"``), a marker once its stop signal
is set, and, with ``OFA_TEST_FLAKY_TASK=1``, a task that counts its runs and
raises each time. Nothing here is part of the product: gunicorn loads it with
``--pythonpath tests gunicorn_task_app:create_app()``.
"""

from __future__ import annotations

import os

from flask import Flask

from demo import create_app as create_demo_app
from flask_openfactory import AssetBlueprint, EventAttribute, Record, StopSignal

FLAKY_ENV = "OFA_TEST_FLAKY_TASK"
WATCH_ENV = "OFA_TEST_WATCH"  # a UUID: subscribe to that asset's position_x and echo each update
BEAT = 0.1  # seconds between heartbeats

tasks = AssetBlueprint("gunicorn_tasks", __name__)
heartbeat = tasks.attribute(EventAttribute("heartbeat", tag="Test.Heartbeat"))
heartbeat_stopped = tasks.attribute(EventAttribute("heartbeat_stopped", tag="Test.Stopped"))
async_heartbeat = tasks.attribute(EventAttribute("async_heartbeat", tag="Test.Heartbeat"))
async_stopped = tasks.attribute(EventAttribute("async_heartbeat_stopped", tag="Test.Stopped"))


@tasks.background_task()
def beat(stop: StopSignal) -> None:
    """A plain function: waits on the stop signal where it would sleep."""
    count = 0
    while not stop.wait(BEAT):
        count += 1
        heartbeat.set(f"{os.getpid()} {count}")
    heartbeat_stopped.set(f"{os.getpid()} {count}")


@tasks.background_task()
async def async_beat(stop: StopSignal) -> None:
    """A coroutine: ``await stop.sleep(...)`` instead of ``asyncio.sleep``."""
    count = 0
    while not await stop.sleep(BEAT):
        count += 1
        async_heartbeat.set(f"{os.getpid()} {count}")
    async_stopped.set(f"{os.getpid()} {count}")


flaky_tasks = AssetBlueprint("gunicorn_flaky_tasks", __name__)
flaky_runs = flaky_tasks.attribute(EventAttribute("flaky_runs", tag="Test.Runs"))
_runs = 0


@flaky_tasks.background_task(backoff=0.2, max_backoff=0.4)
def flaky(stop: StopSignal) -> None:
    """Raises on every run: its Condition ``flaky_task`` goes to Fault and it is restarted."""
    global _runs
    _runs += 1
    flaky_runs.set(f"{os.getpid()} {_runs}")
    raise RuntimeError(f"flaky failure #{_runs}")


watching = AssetBlueprint("gunicorn_watching", __name__)
echo = watching.attribute(EventAttribute("echo", tag="Test.Echo"))


@watching.subscribe(lambda: os.environ[WATCH_ENV], attribute="position_x")
def echo_position(record: Record) -> None:
    """Each update, as ``"<pid> <value>"``: which worker delivered what, seen from the topic."""
    echo.set(f"{os.getpid()} {record.value:g}")


def create_app() -> Flask:
    """The demo app (config from ``FLASK_CONFIG`` and the environment) with the tasks."""
    app = create_demo_app()
    app.register_blueprint(tasks)
    if os.environ.get(FLAKY_ENV) == "1":
        app.register_blueprint(flaky_tasks)
    if os.environ.get(WATCH_ENV):
        app.register_blueprint(watching)
    return app
