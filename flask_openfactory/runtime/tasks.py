"""Background tasks: the app's own loops, in place of the reference's main loops.

A task runs in exactly one process of the deployment, the one that executes
the asset's commands, because a loop that drives a machine must not run once
per worker. It gets a ``StopSignal`` to wait on instead of sleeping, so that
losing the role or shutting down ends it promptly. A task that raises is
restarted with exponential backoff and its error is published as the task's
Condition attribute; a task that returns is done until the next takeover.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..wire.protocol import validate_identifier
from .attributes import ConditionAttribute
from .backoff import backoff_delay
from .counters import TASK_FAILURES, TASK_RUNS, Counters
from .logs import AssetLog

_log = logging.getLogger("flask_openfactory.tasks")

F = TypeVar("F", bound=Callable[..., Any])
ContextFactory = Callable[[], AbstractContextManager[Any]]
ConditionSink = Callable[[str, str, str], None]  # (attribute ID, value, level)

NORMAL, FAULT = "Normal", "Fault"


class StopSignal:
    """Set when the task must end: this process lost the executor role or is stopping.

    Sync tasks call ``wait(seconds)`` where they would sleep; async tasks
    ``await sleep(seconds)``. Both return True once the task should return.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._wakers: list[Callable[[], object]] = []

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    async def sleep(self, seconds: float) -> bool:
        """Like ``asyncio.sleep``, cut short by the stop signal."""
        if self._event.is_set():
            return True
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        waker = lambda: loop.call_soon_threadsafe(woken.set)  # noqa: E731
        with self._lock:
            self._wakers.append(waker)
        try:
            if self._event.is_set():
                return True
            try:
                await asyncio.wait_for(woken.wait(), seconds)
            except TimeoutError:
                pass
            return self._event.is_set()
        finally:
            with self._lock:
                self._wakers.remove(waker)

    def set(self) -> None:
        self._event.set()
        with self._lock:
            wakers = list(self._wakers)
        for wake in wakers:
            try:
                wake()
            except RuntimeError:  # the task's loop is already closed
                pass


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A declared task: what ``@background_task`` records."""

    name: str
    func: Callable[..., Any]
    backoff: float = 1.0  # first restart delay; doubles per consecutive failure
    max_backoff: float = 60.0
    healthy_after: float = 30.0  # running this long without raising clears the fault
    condition: ConditionAttribute = field(init=False, compare=False)  # the task's health on the platform

    def __post_init__(self) -> None:
        object.__setattr__(self, "condition", ConditionAttribute(f"{self.name}_task", tag=NORMAL))

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)


def background_task(
    name: str | None = None, *, backoff: float = 1.0, max_backoff: float = 60.0, healthy_after: float = 30.0
) -> Callable[[F], F]:
    """Validate and record a task on ``func(stop)`` (``AssetBlueprint.background_task`` declares it)."""

    def decorate(func: F) -> F:
        if not callable(func):
            raise TypeError(f"@background_task decorates a function, got {func!r}")
        try:
            task_name = validate_identifier("task name", name or func.__name__)
        except ValueError as exc:
            raise ValueError(f"{exc}; name it with @background_task('...')") from None
        if backoff <= 0 or max_backoff < backoff or healthy_after <= 0:
            raise ValueError(
                f"task {task_name!r}: need 0 < backoff <= max_backoff and healthy_after > 0, "
                f"got backoff={backoff}, max_backoff={max_backoff}, healthy_after={healthy_after}"
            )
        params = inspect.signature(func).parameters
        if len(params) != 1:
            raise TypeError(f"task {task_name!r} must take exactly one argument, the stop signal")
        func.__ofa_task__ = TaskSpec(task_name, func, backoff, max_backoff, healthy_after)  # type: ignore[attr-defined]  # a marker
        return func

    return decorate


def task_of(func: Callable[..., Any]) -> TaskSpec:
    spec = getattr(func, "__ofa_task__", None)
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"{func!r} is not decorated with @background_task()")
    return spec


class TaskRunner:
    """One task for one tenure of the executor role: a thread, its stop signal, its restarts."""

    def __init__(
        self,
        spec: TaskSpec,
        *,
        context: ContextFactory | None,
        report: ConditionSink,
        log: AssetLog,
        counters: Counters,
    ) -> None:
        self.spec = spec
        self.stop_signal = StopSignal()
        self._context = context or nullcontext
        self._report = report
        self._log = log
        self._counters = counters
        self._thread = threading.Thread(target=self._run, name=f"ofa-task-{spec.name}", daemon=True)
        self._grace = 0.0
        self._began = time.monotonic()
        self._faulted = False
        self.failures = 0
        self.runs = 0

    def start(self) -> None:
        self._thread.start()

    def request_stop(self, grace: float) -> None:
        """Async tasks get ``grace`` seconds after the signal before they are cancelled."""
        self._grace = grace
        self.stop_signal.set()

    def join(self, timeout: float) -> bool:
        self._thread.join(max(0.0, timeout))
        if self._thread.is_alive():
            self._log.warning("task %s did not stop within the grace period", self.spec.name)
            return False
        return True

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        """Told to stop (the role moves or the process stops); the task may still be winding up."""
        return self.stop_signal.is_set()

    def _run(self) -> None:
        spec, stop = self.spec, self.stop_signal
        self._set_condition("running", NORMAL)
        consecutive = 0
        while not stop.is_set():
            began = self._began = time.monotonic()
            self.runs += 1
            self._counters.add_labelled(TASK_RUNS, spec.name)
            try:
                with self._context():
                    if spec.is_async:
                        asyncio.run(self._run_async())
                    else:
                        spec.func(stop)
            except Exception as exc:
                if stop.is_set():
                    self._log.exception("task %s raised while stopping", spec.name)
                    break
                self.failures += 1
                self._counters.add_labelled(TASK_FAILURES, spec.name)
                consecutive = 1 if time.monotonic() - began >= spec.healthy_after else consecutive + 1
                # Doubling without a practical bound below max_backoff, as always; bounded, so that days of
                # failures cannot overflow the float.
                delay = backoff_delay(spec.backoff, consecutive - 1, spec.max_backoff, max_doublings=60)
                self._log.error("task %s raised %s: %s; restarting in %.1fs", spec.name,
                                type(exc).__name__, exc, delay, exc_info=exc)
                self._faulted = True
                self._set_condition(f"{type(exc).__name__}: {exc}", FAULT)
                if stop.wait(delay):
                    break
                continue
            if not stop.is_set():
                self._log.info("task %s returned; it runs again after the next takeover", spec.name)
            break

    def maintain(self) -> None:
        """Called now and then by the supervisor: clear the fault once a restart has held."""
        if self._faulted and self.alive and time.monotonic() - self._began >= self.spec.healthy_after:
            self._faulted = False
            self._set_condition("running", NORMAL)

    async def _run_async(self) -> None:
        task = asyncio.ensure_future(self.spec.func(self.stop_signal))
        stopped = asyncio.ensure_future(self.stop_signal.sleep(float("inf")))
        done, _ = await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:  # stopping: let it finish on its own, then cancel
            try:
                await asyncio.wait_for(asyncio.shield(task), self._grace)
            except TimeoutError:
                self._log.warning("task %s ignored the stop signal for %.1fs; cancelling it",
                                  self.spec.name, self._grace)
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                return
        stopped.cancel()
        task.result()

    def _set_condition(self, value: str, level: str) -> None:
        try:
            self._report(self.spec.condition.id, value, level)
        except Exception:  # a broker outage must not kill the task's supervision
            self._log.exception("could not publish condition %s", self.spec.condition.id)
