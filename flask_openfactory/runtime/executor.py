"""This process's part in executing the asset's commands: its dispatcher, while started.

The dispatcher reads the command log and runs the methods when this process
holds the executor role; who may hold it is the deployment's question
(``Deployment.may_execute``), asked by the dispatcher at every poll.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from ..transports import Transport
from .background import BackgroundWork
from .calls import CallBook
from .counters import Counters
from .dispatch import Dispatcher, DispatcherState, DispatchSettings
from .logs import AssetLog
from .registry import Declarations
from .settings import RuntimeSettings


class ExecutorRole:
    """The dispatcher of one process (rebuilt in a forked child)."""

    def __init__(
        self,
        settings: RuntimeSettings,
        declared: Declarations,
        *,
        context: Callable[[], AbstractContextManager[Any]] | None,
        counters: Counters,
        calls: CallBook,
        log: AssetLog,
        background: BackgroundWork,
        eligible: Callable[[], bool],
        catch_up: Callable[[float], None],
    ) -> None:
        self._settings = settings
        self._declared = declared
        self._context = context
        self._counters = counters
        self._calls = calls
        self._log = log
        self._background = background
        self._eligible = eligible
        self._catch_up = catch_up
        self.dispatcher: Dispatcher | None = None

    def start(self, transport: Transport) -> None:
        """Start the dispatcher (and the duties that follow its ownership)."""
        settings, calls = self._settings, self._calls
        self.dispatcher = Dispatcher(
            DispatchSettings(
                asset_uuid=settings.asset_uuid,
                group=settings.group,
                max_age=settings.command_max_age,
                timeout=settings.command_timeout,
                concurrency=settings.command_concurrency,
                dedupe_size=settings.dedupe_size,
                signing_keys=settings.command_secret,
                allowed_senders=settings.allowed_senders,
                argument_limits=settings.argument_limits,
            ),
            transport=transport,
            methods=lambda: self._declared.methods,
            context=self._context,
            counters=self._counters,
            on_ownership=self._ownership_changed,
            completed=calls,
            eligible=self._eligible,
            before_executing=self._catch_up_before_executing,
            on_result=lambda record: calls.observe((record,)),  # as any process reads it back
            on_unrecorded=calls.unrecorded,
        )
        self._background.start_duties()
        self.dispatcher.start()

    def release(self) -> Dispatcher | None:
        """The dispatcher, for the caller to stop; this process has none from now on."""
        dispatcher, self.dispatcher = self.dispatcher, None
        return dispatcher

    @property
    def owns(self) -> bool:
        """Whether this process executes the asset's commands now (its dispatcher holds the log)."""
        dispatcher = self.dispatcher
        return dispatcher is not None and dispatcher.owns

    def halt(self) -> None:
        dispatcher = self.dispatcher
        if dispatcher is not None:
            dispatcher.halt()

    def state(self) -> DispatcherState | None:
        dispatcher = self.dispatcher
        return dispatcher.state() if dispatcher is not None else None

    def _catch_up_before_executing(self) -> None:
        """A new executor knows every answer the log holds before it runs anything."""
        self._catch_up(max(self._settings.read_timeout, 10.0))

    def _ownership_changed(self, owns: bool) -> None:
        """One line per lifecycle event; the duties follow the command log."""
        if owns:
            self._log.info("executing commands here")
        else:
            self._log.info("handed over: no longer executing commands here")
        self._background.ownership(owns)
