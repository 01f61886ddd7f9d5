"""What runs only in the process that executes commands: tasks and subscriptions.

The dispatcher says when this process gains or loses the executor role; a
thread of its own starts or stops the runners, so that the dispatch thread
never waits on a task that takes its time to stop. On a takeover the old
owner stops its runners before it releases the command log, so two processes
never run the same task at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .logs import AssetLog


class Runner(Protocol):
    """A task or subscription runner, as the supervisor drives it (and tests watch it)."""

    @property
    def name(self) -> str: ...

    @property
    def alive(self) -> bool: ...

    @property
    def stopping(self) -> bool: ...

    def start(self) -> None: ...

    def request_stop(self, grace: float) -> None: ...

    def join(self, timeout: float) -> bool: ...

    def maintain(self) -> None: ...


def stop_runners(runners: list[Runner], timeout: float) -> bool:
    """Signal all first, then wait: they stop in parallel within one budget."""
    deadline = time.monotonic() + timeout
    for runner in runners:
        runner.request_stop(max(0.0, timeout - 0.5))
    return all([runner.join(deadline - time.monotonic()) for runner in runners])


@dataclass(frozen=True, slots=True)
class DutiesState:
    """The executor role's tasks and subscriptions in one process, at one moment.

    The tuple is a copy; its runners are the live ones, so that a test can see
    a stop request reach a runner (``stopping``) while the role moves.
    """

    runners: tuple[Runner, ...]  # started for the current tenure; empty while standing by
    tenures: int  # how often this process took the role
    error: str | None  # why the runners could not start (readiness says so too)


class Duties:
    """Start ``make_runners()`` while this process owns the role; stop them when it does not."""

    MAINTAIN_EVERY = 1.0
    RETRY_AFTER = 10.0

    def __init__(self, make_runners: Callable[[], list[Runner]], *, grace: float, log: AssetLog) -> None:
        self._make_runners = make_runners
        self._grace = grace
        self._log = log
        self._changed = threading.Condition()
        self._wanted = False
        self._stopping = False
        self._dirty = False
        self._retry_at = 0.0
        self.runners: list[Runner] = []
        self.tenures = 0  # how often this process took the role
        self.error: str | None = None  # why the runners could not start (readiness says so)
        self._thread = threading.Thread(target=self._run, name="ofa-duties", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def ownership(self, owns: bool) -> None:
        """From the dispatcher: this process now owns the command log, or not."""
        with self._changed:
            self._wanted, self._dirty = owns, True
            self._changed.notify_all()

    def running(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for this process to have taken the role and started its runners."""
        with self._changed:
            return self._changed.wait_for(lambda: bool(self.runners), timeout)

    def state(self) -> DutiesState:
        """A snapshot (see ``AssetRuntime.duties_state``)."""
        return DutiesState(tuple(self.runners), self.tenures, self.error)

    def stop(self, timeout: float) -> None:
        with self._changed:
            self._stopping, self._dirty = True, True
            self._grace = min(self._grace, max(0.1, timeout - 0.2))
            self._changed.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        runners, self.runners = self.runners, []  # in case the thread could not
        stop_runners(runners, 0.1)

    def _run(self) -> None:
        while True:
            with self._changed:
                if not self._dirty:
                    self._changed.wait(self.MAINTAIN_EVERY)
                self._dirty = False
                wanted = self._wanted and not self._stopping
                stopping = self._stopping
            if wanted and not self.runners and time.monotonic() >= self._retry_at:
                self._take_role()
            elif not wanted and self.runners:
                self._leave_role()
            for runner in self.runners:
                runner.maintain()
            if stopping:
                return

    def _take_role(self) -> None:
        try:
            runners = self._make_runners()
        except Exception as exc:  # e.g. a subscription's asset UUID missing from config
            self.error = f"background tasks and subscriptions could not start: {type(exc).__name__}: {exc}"
            self._log.warning("%s; retrying in %.0fs", self.error, self.RETRY_AFTER)
            self._log.debug("duties start failure", exc_info=True)
            self._retry_at = time.monotonic() + self.RETRY_AFTER
            return
        self.error = None
        self.tenures += 1
        for runner in runners:
            runner.start()
        with self._changed:
            self.runners = runners
            self._changed.notify_all()  # for ``running``
        self._log.info("started %d background task(s) and subscription(s)", len(runners))

    def _leave_role(self) -> None:
        runners, self.runners = self.runners, []
        if not stop_runners(runners, self._grace):
            self._log.warning("some background tasks outlived the grace period of %.1fs", self._grace)
        self._log.info("stopped %d background task(s) and subscription(s)", len(runners))
