"""Readiness: the checks that say whether this process can serve the asset, since when.

Each check remembers when its state last changed (as this process saw it), so
that ``/ofa/ready`` and the metrics report how long something has been missing
rather than when it was last looked at.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..transports import Health, Transport
from .dispatch import Dispatcher


class Readiness:
    """The stamped checks of one process (rebuilt in a forked child)."""

    def __init__(self) -> None:
        self._states: dict[str, tuple[Any, float]] = {}  # check -> (state, since)
        self._lock = threading.Lock()  # not the runtime's lock: a probe never waits on a slow start

    def checks(
        self,
        *,
        started: bool,
        started_at: float | None,
        start_error: str | None,
        transport: Transport | None,
        commands: Health | None,
        duties_error: str | None,
    ) -> dict[str, Health]:
        """Each readiness check; ``transport`` None: not connected in this process."""
        checks: dict[str, Health] = {}
        if started:
            checks["runtime"] = self.stamp("runtime", True, "started", since=started_at)
        else:
            checks["runtime"] = self.stamp("runtime", False, start_error or "not started in this process")
        if transport is not None:
            health = transport.health()
            checks["transport"] = self.stamp("transport", health.ok, health.detail, since=health.since)
        else:
            checks["transport"] = self.stamp("transport", False, "not connected in this process")
        if commands is not None:
            checks["commands"] = commands
        if duties_error is not None:
            checks["duties"] = self.stamp("duties", False, duties_error)
        return checks

    def commands(self, dispatcher: Dispatcher | None) -> Health:
        """The command dispatcher's check, for a started process that executes commands."""
        alive = dispatcher is not None and dispatcher.alive
        owns = alive and dispatcher is not None and dispatcher.owns
        detail = ("executing (this process owns the command log)" if owns
                  else "standing by (another process executes)") if alive else "dispatcher not running"
        held = dispatcher.unrecorded() if dispatcher is not None else []
        if held:
            result, reason = held[0]
            detail = (f"{len(held)} command answer(s) not recorded (the log refuses them: "
                      f"{reason}); commands wait until the log takes writes again, first {result.method} "
                      f"{result.correlation_id}")
            return self.stamp("commands", False, detail, state="unrecorded")
        return self.stamp("commands", alive, detail, state=owns)

    def stamp(self, name: str, ok: bool, detail: str, *, state: Any = None, since: float | None = None) -> Health:
        """The check with the time its (ok, state) last changed, as this process saw it.

        A source that knows when the change happened (a transport's tracker,
        the start time) gives ``since``; otherwise the first sighting counts.
        """
        key = (ok, state)
        with self._lock:
            seen = self._states.get(name)
            if seen is None or seen[0] != key:
                seen = self._states[name] = (key, time.time() if since is None else since)
        return Health(ok, detail, seen[1])
