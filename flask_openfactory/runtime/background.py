"""The background work of one process: background tasks and subscriptions.

Tasks and ordinary subscriptions run only in the process that holds the
executor role (``Duties`` starts and stops them as the role moves);
subscriptions declared ``every_worker`` run in every process from its start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from ..transports import Transport
from .counters import Counters
from .duties import Duties, DutiesState, Runner, stop_runners
from .logs import AssetLog
from .registry import Declarations
from .settings import RuntimeSettings
from .subscriptions import SubscriptionRunner
from .tasks import TaskRunner


class BackgroundWork:
    """The runners of one process (rebuilt in a forked child)."""

    def __init__(
        self,
        settings: RuntimeSettings,
        declared: Declarations,
        *,
        transport: Callable[[], Transport],
        context: Callable[[], AbstractContextManager[Any]] | None,
        log: AssetLog,
        counters: Counters,
        report_condition: Callable[[str, str, str], None],
    ) -> None:
        self._settings = settings
        self._declared = declared
        self._transport = transport
        self._context = context
        self._log = log
        self._counters = counters
        self._report_condition = report_condition
        self.duties: Duties | None = None  # tasks and subscriptions of the executing process
        self._watchers: list[Runner] = []  # every-worker subscriptions

    def prepare(self) -> None:
        """At start, before the dispatcher exists: the duties, if this process may execute any."""
        declared = self._declared
        if self._settings.execute_commands and (declared.tasks or any(
                not s.every_worker for s in declared.subscriptions.values())):
            self.duties = Duties(self._executor_runners, grace=self._settings.stop_timeout, log=self._log)

    def start_duties(self) -> None:
        """Just before the dispatcher starts: the duties then follow its ownership."""
        if self.duties is not None:
            self.duties.start()

    def start_watchers(self) -> None:
        self._watchers = self._subscription_runners(every_worker=True)
        for watcher in self._watchers:
            watcher.start()

    def ownership(self, owns: bool) -> None:
        if self.duties is not None:
            self.duties.ownership(owns)

    def stop(self, timeout: float) -> None:
        duties, self.duties = self.duties, None
        watchers, self._watchers = self._watchers, []
        if duties is not None:
            duties.stop(timeout)
        if watchers:
            stop_runners(watchers, min(timeout, 1.0))

    @property
    def error(self) -> str | None:
        """Why the executor role's runners could not start, if they could not."""
        duties = self.duties
        return duties.error if duties is not None else None

    def state(self) -> DutiesState | None:
        duties = self.duties
        return duties.state() if duties is not None else None

    def _executor_runners(self) -> list[Runner]:
        """Built each time this process takes the executor role (in the duties thread)."""
        runners: list[Runner] = [
            TaskRunner(spec, context=self._context, report=self._report_condition, log=self._log,
                       counters=self._counters)
            for spec in self._declared.tasks.values()
        ]
        return runners + self._subscription_runners(every_worker=False)

    def _subscription_runners(self, *, every_worker: bool) -> list[Runner]:
        specs = [s for s in self._declared.subscriptions.values() if s.every_worker == every_worker]
        if not specs:
            return []
        with (self._context or nullcontext)():  # a watched UUID may come from the app's config
            watched = [(spec, spec.resolve_asset()) for spec in specs]
        return [
            SubscriptionRunner(spec, uuid, transport=self._transport(), group=self._settings.group,
                               context=self._context, log=self._log, counters=self._counters)
            for spec, uuid in watched
        ]

    def _subscription_runners_here(self) -> list[SubscriptionRunner]:
        duties = self.duties
        runners = list(self._watchers) + (list(duties.runners) if duties is not None else [])
        return [r for r in runners if isinstance(r, SubscriptionRunner) and r.alive]

    def running_subscriptions(self) -> list[str]:
        """Names of the subscriptions running in this process now."""
        return sorted(r.spec.name for r in self._subscription_runners_here())

    def subscriptions_settled(self, timeout: float = 5.0) -> bool:
        """True once every subscription running here has handled what the log held (see
        ``AssetRuntime.subscriptions_settled``)."""
        deadline = time.monotonic() + timeout
        duties = self.duties
        if duties is not None and not duties.running(timeout):  # the executor role not taken yet
            return False
        return all(r.settled(max(0.0, deadline - time.monotonic())) for r in self._subscription_runners_here())
