"""Processes as the runtime names them: by pid and start time, and stopped at exit.

A pid alone is reused by the system; with its start time it names one process,
so a deployment marker left by a dead process is never taken for a live one.
"""

from __future__ import annotations

import atexit
import os
import weakref
from typing import Protocol

from .settings import RuntimeSettings


class _Stoppable(Protocol):
    """What stopping at exit needs of a runtime."""

    @property
    def settings(self) -> RuntimeSettings: ...

    @property
    def started(self) -> bool: ...

    def stop(self, timeout: float | None = None) -> None: ...


def process_start_time(pid: int) -> int | None:
    """When a process started (clock ticks since boot, from /proc), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def process_identity(pid: int) -> str:
    """A process named so that a reused pid is not mistaken for it (its start time)."""
    started = process_start_time(pid)
    return f"{pid}@{'?' if started is None else started}"


def gunicorn_deployment(master_pid: int) -> str:
    """The deployment of a gunicorn worker: its master (reloads and recycled workers stay in it)."""
    return f"gunicorn:{process_identity(master_pid)}"


def stop_at_exit(runtime: _Stoppable) -> None:
    """Servers without our hooks (``flask run``, waitress) stop the runtime at process exit:
    ``avail=UNAVAILABLE`` is published and pending records flushed. A no-op when gunicorn's
    ``worker_exit`` stopped it already; a weak reference keeps the runtime collectable."""
    ref = weakref.ref(runtime)
    pid = os.getpid()

    def stop() -> None:
        target = ref()
        if target is not None and os.getpid() == pid and target.started:
            target.stop(min(target.settings.stop_timeout, 5.0))

    atexit.register(stop)
