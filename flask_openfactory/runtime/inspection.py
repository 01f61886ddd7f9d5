"""Read-only views of a runtime: readiness, status, and snapshots for metrics, the CLI and tests.

A mixin of ``AssetRuntime``: each view is a few lines over the runtime's own
per-process parts. Snapshots (frozen dataclasses, copies) rather than the
objects behind them, so that whoever looks cannot change the runtime, and the
internals can move freely (only the runners in ``DutiesState`` are live: a stop
request must be seen reaching them).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..transports import Health, Transport
from ..wire.protocol import Record
from .background import BackgroundWork
from .counters import Counters
from .dispatch import DispatcherState
from .duties import DutiesState
from .executor import ExecutorRole
from .health import Readiness
from .settings import RuntimeSettings
from .state import FollowedState, FollowerState


class Inspection:
    """``readiness``, ``health_checks``, ``status`` and the ``*_state`` snapshots."""

    if TYPE_CHECKING:  # provided by AssetRuntime
        settings: RuntimeSettings
        counters: Counters
        started_at: float | None
        start_error: str | None
        _started: bool
        _transport: Transport | None
        _readiness: Readiness
        _executor: ExecutorRole
        _background: BackgroundWork
        _state: FollowedState

        @property
        def asset_uuid(self) -> str: ...

        @property
        def transport(self) -> Transport: ...

        def _check_process(self) -> None: ...

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether this process can serve the asset, and what is missing since when."""
        checks = self.health_checks()
        return all(h.ok for h in checks.values()), {name: h.as_dict() for name, h in checks.items()}

    def health_checks(self) -> dict[str, Health]:
        """Each readiness check; its ``since`` moves only when its state changes."""
        self._check_process()
        return self._readiness.checks(
            started=self._started,
            started_at=self.started_at,
            start_error=self.start_error,
            transport=self.transport if self._transport is not None or self._started else None,
            commands=self._commands_check(),
            duties_error=self._background.error,
        )

    def _commands_check(self) -> Health | None:
        if not (self.settings.execute_commands and self._started):
            return None
        return self._readiness.commands(self._executor.dispatcher)

    def dispatcher_state(self) -> DispatcherState | None:
        """This process's command dispatcher; None when it has none (not started, or it
        executes no commands: ``OPENFACTORY_EXECUTE_COMMANDS`` off)."""
        self._check_process()
        return self._executor.state()

    @property
    def owns_command_log(self) -> bool:
        """Whether this process executes the asset's commands now (its dispatcher holds the log)."""
        self._check_process()
        return self._executor.owns

    def duties_state(self) -> DutiesState | None:
        """The executor role's tasks and subscriptions here; None when this process has no
        such duties (it executes no commands, or the app declares none)."""
        self._check_process()
        return self._background.state()

    def follower_state(self) -> FollowerState:
        """The thread that applies the asset's log to this process's state (reads wait on it)."""
        self._check_process()
        return self._state.state()

    def cached_records(self) -> dict[str, Record]:
        """A copy of this process's current values by ID, commands and results included
        (``records()`` gives the attributes only); it holds declared IDs only, so stays bounded."""
        self._check_process()
        return self._state.copy()

    def running_subscriptions(self) -> list[str]:
        """Names of the subscriptions running in this process now."""
        return self._background.running_subscriptions()

    def subscriptions_settled(self, timeout: float = 5.0) -> bool:
        """True once every subscription running here has handled what the log held (tests).

        Waits first for the executor role's subscriptions to start, if this
        process is to run them.
        """
        return self._background.subscriptions_settled(timeout)

    def transport_stats(self) -> dict[str, Any]:
        """This process's transport statistics, without creating a transport."""
        self._check_process()
        transport = self._transport
        return dict(transport.stats()) if transport is not None else {}

    def status(self) -> dict[str, Any]:
        ready, checks = self.readiness()
        stats: dict[str, Any] = dict(self.counters)
        if self._transport is not None:
            stats.update({f"transport_{k}": v for k, v in self._transport.stats().items()})
        return {
            "asset_uuid": self.asset_uuid,
            "pid": os.getpid(),
            "transport": self.transport.display_url,
            "ready": ready,
            "checks": checks,
            "counters": stats,
        }
