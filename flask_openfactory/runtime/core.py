"""The asset runtime of one app in one process: state, lifecycle, commands.

Nothing here knows HTTP. The runtime is cheap to build (``init_app`` builds
it) and does no I/O until ``start`` or the first read or write, always in the
process that uses it: a runtime inherited through ``fork`` leaves the parent's
clients untouched and makes its own.

``AssetRuntime`` holds the lifecycle and the attribute reads and writes; the
other jobs are its collaborators' (declarations, the followed state, the
deployment and its hand-over, the executor role, the start-up announcement,
background work, readiness), the call path's (``CallPath``) and the read-only
views' (``Inspection``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from ..transports import Transport, create_transport
from ..transports.base import KEEP_ALIVE
from ..transports.pid import THIS_PROCESS
from ..wire.methods import MethodSpec
from ..wire.protocol import METHOD, UNAVAILABLE, Record, format_timestamp, stamped_record, validate_identifier
from ..wire.routing import routing_warnings
from .announcement import Announcement, standard_attributes
from .attributes import Attribute
from .background import BackgroundWork
from .calling import CallPath
from .calls import CallBook
from .counters import Counters
from .deployment import Deployment
from .errors import RuntimeStopped
from .executor import ExecutorRole
from .health import Readiness
from .inspection import Inspection
from .logs import AssetLog
from .method_results import MethodResults
from .metrics_registry import register, withdraw
from .processes import stop_at_exit
from .registry import Declarations
from .settings import CALL_WINDOW_MARGIN, START_CHECK_SECONDS, RuntimeSettings
from .state import FollowedState
from .storage import Storage, open_storages
from .subscriptions import SubscriptionSpec
from .tasks import TaskSpec

_log = logging.getLogger("flask_openfactory.runtime")


class AssetRuntime(CallPath, Inspection):
    """One app's asset in this process."""

    def __init__(
        self,
        settings: RuntimeSettings,
        *,
        context: Callable[[], AbstractContextManager[Any]] | None = None,
    ) -> None:
        validate_identifier("asset UUID", settings.asset_uuid)
        self.settings = settings
        self.log = AssetLog(_log, settings.asset_uuid)
        self._context = context
        self._declared = Declarations(settings.asset_uuid, standard_attributes())
        self._attributes = self._declared.attributes  # the same dict: set() reads it directly
        self._announcement = Announcement(settings, self._declared, set_value=self.set, publish=self._publish)
        self._storages: dict[str, Storage] | None = None
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        """Everything that belongs to one process; rebuilt after a fork."""
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._transport: Transport | None = None
        self._started = False
        self._stopped = False  # stop() closed the transport: a late write must not reopen it
        self._stop_requested = False  # stop() began here since the last start: requests must not start it again
        self._stopping = threading.Event()
        self.counters = Counters()
        self.method_results = MethodResults()  # results seen on the log, for metrics
        self.started_at: float | None = None
        self.start_error: str | None = None
        # The log's memory of recent calls (duplicate suppression, idempotent HTTP calls).
        self.calls = CallBook(self.settings.command_max_age + CALL_WINDOW_MARGIN, self.settings.dedupe_size)
        self._state = FollowedState(self._declared, lock=self._lock, stopping=self._stopping, calls=self.calls,
                                    method_results=self.method_results, counters=self.counters, log=self.log,
                                    on_poll=self._commands_check)
        self._cache = self._state.records  # the same dict: set() stores into it directly
        self._readiness = Readiness()
        self._background = BackgroundWork(self.settings, self._declared, transport=lambda: self.transport,
                                          context=self._context, log=self.log, counters=self.counters,
                                          report_condition=self._report_condition)
        self._deployment = Deployment(self.settings, log=self.log, stopping=self._stopping,
                                      owns=lambda: self._executor.owns, publish_unavailable=self._publish_unavailable)
        self._executor = ExecutorRole(self.settings, self._declared, context=self._context, counters=self.counters,
                                      calls=self.calls, log=self.log, background=self._background,
                                      eligible=self._deployment.may_execute, catch_up=self.sync)

    def _check_process(self) -> None:
        if self._pid != THIS_PROCESS.pid:
            if self._transport is not None:
                KEEP_ALIVE.append(self._transport)
            if self._executor.dispatcher is not None:
                KEEP_ALIVE.append(self._executor.dispatcher)
            self._reset_process_state()

    # -- declarations (before start) ----------------------------------------------

    def declare_attribute(self, attribute: Attribute) -> None:
        self._declared.declare_attribute(attribute)

    def declare_method(self, spec: MethodSpec) -> None:
        self._declared.declare_method(spec)

    def declare_task(self, spec: TaskSpec) -> None:
        self._declared.declare_task(spec)

    def declare_subscription(self, spec: SubscriptionSpec) -> None:
        self._declared.declare_subscription(spec)

    @property
    def asset_uuid(self) -> str:
        return self.settings.asset_uuid

    @property
    def methods(self) -> dict[str, MethodSpec]:
        return dict(self._declared.methods)

    @property
    def declared_attributes(self) -> dict[str, Attribute]:
        return dict(self._attributes)

    @property
    def tasks(self) -> dict[str, TaskSpec]:
        return dict(self._declared.tasks)

    @property
    def subscriptions(self) -> dict[str, SubscriptionSpec]:
        return dict(self._declared.subscriptions)

    # -- lifecycle -------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._pid == THIS_PROCESS.pid and self._started

    @property
    def stopped(self) -> bool:
        """``stop()`` ran in this process since the last start."""
        return self._pid == os.getpid() and self._stopped

    @property
    def stop_requested(self) -> bool:
        """``stop()`` began in this process since the last start (it may still be running): only an
        explicit ``start()`` starts this runtime again, never a request (see ``ensure_started``)."""
        return self._pid == os.getpid() and self._stop_requested

    @property
    def transport_created(self) -> bool:
        """Whether this process opened the transport already (it can no longer be replaced)."""
        return self._pid == os.getpid() and self._transport is not None

    @property
    def transport(self) -> Transport:
        """This process's transport, created on first use."""
        transport = self._transport
        if transport is not None and self._pid == THIS_PROCESS.pid:
            return transport  # every set() comes here: no lock once it exists
        self._check_process()
        with self._lock:
            if self._transport is None:
                self._transport = create_transport(
                    self.settings.transport_url, self.settings.transport_options
                )
                self._transport.on_failure = self._delivery_failed
            return self._transport

    def start(self, *, eligible: Callable[[], bool] | None = None, deployment: str | None = None) -> None:
        """Publish the asset, follow its log, and take part in executing commands.

        Idempotent per process; a child of a started process starts its own.
        ``eligible`` turns False when this process is about to stop (a gunicorn
        worker told to exit): it then never takes the executor role and hands
        it over at once. ``deployment`` names the start this process belongs to
        (gunicorn: the master): the start-up records are written once per name.
        """
        self._check_process()
        with self._lock:
            if self._started:
                return
            self._stopped = self._stop_requested = False
            self._deployment.retiring = False
            if eligible is not None:
                self._deployment.eligible = eligible
            if deployment is not None:
                self._deployment.name = deployment
            try:
                self._start()
            except Exception as exc:
                self.start_error = f"{type(exc).__name__}: {exc}"
                self._abandon_start()
                raise
            self.start_error = None
            self._started = True
            self.started_at = time.time()
            stop_at_exit(self)
        self.log.info("started on %s", self.transport.display_url)
        for warning in routing_warnings(self.asset_uuid):
            self.log.warning("%s", warning)
        self._register_metrics()

    def _register_metrics(self) -> None:
        target = self.settings.metrics_target
        if target is None:
            return
        try:
            register(self.transport, self.asset_uuid, target)
        except Exception as exc:  # scraping is optional: the asset serves without it
            self.log.warning("could not register the metrics target with the Prometheus registry: %s", exc)

    def withdraw_metrics(self) -> None:
        """Withdraw the metrics target, when the whole server stops (not one worker)."""
        if self.settings.metrics_target is None:
            return
        try:
            withdraw(self.transport, self.asset_uuid)
        except Exception as exc:
            self.log.warning("could not withdraw the metrics target from the Prometheus registry: %s", exc)

    def _start(self) -> None:
        transport = self.transport
        self._stopping.clear()
        self._state.open(transport)  # first: a record written while the snapshot is read is followed
        snapshot = transport.snapshot(self.asset_uuid)
        self._state.load(snapshot)
        # Connected now, not at the first write: a process that announces nothing still
        # writes calls, and its readiness and reads need the log's health from the start.
        transport.check(START_CHECK_SECONDS)
        self._background.prepare()
        self._state.start(transport)
        self._deployment.join(transport, digest=self._announcement.digest(),
                              announce=lambda: self._announcement.publish(snapshot))
        if self.settings.execute_commands:
            self._executor.start(transport)
        self._background.start_watchers()

    def serve_as(self, *, eligible: Callable[[], bool], deployment: str) -> None:
        """Set before a start that another component makes (a gunicorn worker's starter)."""
        self._check_process()  # a runtime inherited through fork is reset first, not after
        self._deployment.eligible, self._deployment.name = eligible, deployment

    def _report_condition(self, attr_id: str, value: str, level: str) -> None:
        self.set(attr_id, value, tag=level)

    def _abandon_start(self) -> None:
        """A failed start leaves no thread behind (the start guard will try again)."""
        self._stopping.set()
        self._deployment.leave(publish_unavailable=False, budget=1.0)
        self._background.stop(1.0)
        dispatcher = self._executor.release()
        if dispatcher is not None:
            dispatcher.stop(1.0)
        self._state.join(1.0)

    def _publish_unavailable(self, budget: float) -> None:
        """The whole deployment stops: availability, and the metrics target withdrawn."""
        self.set("avail", UNAVAILABLE)
        self.withdraw_metrics()
        if self.transport.flush(max(0.1, budget)):
            self.log.error("avail=UNAVAILABLE not delivered before the stop deadline")

    def close_deployment(self, budget: float) -> bool:
        """For a server whose own processes are gone (the gunicorn master at exit):
        publish ``UNAVAILABLE`` unless another server on this host still serves the asset."""
        return self._deployment.close(self.transport, budget)

    def halt_commands(self) -> None:
        """Start no further command in this process, now, without waiting (``stop`` follows)."""
        if self._pid == os.getpid():
            self._executor.halt()

    def stop(self, timeout: float | None = None, *, publish_unavailable: bool = True,
             linger: float = 0.0) -> None:
        """Finish the command in flight, publish ``avail`` if asked, flush, close.

        Gunicorn workers pass ``publish_unavailable=False``: availability belongs
        to the whole server, which the master reports when it exits; and, on a
        reload, ``linger``: the executing worker goes on executing until a new
        worker has taken the role (at most that long), so commands never wait
        for the new workers to boot.
        """
        if self._pid != os.getpid():
            return
        self._stop_requested = True
        budget = self.settings.stop_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        self._deployment.retiring = True
        self._deployment.linger(min(linger, budget / 2))
        with self._lock:
            started, self._started = self._started, False
            dispatcher = self._executor.release()
        self._stopping.set()
        # Tasks first, while this process still holds the command log: a successor
        # must not start them before they have ended here.
        self._background.stop(max(0.1, deadline - time.monotonic() - 0.5))
        if dispatcher is not None:
            dispatcher.stop(max(0.1, deadline - time.monotonic()))
        if started:
            self._deployment.leave(publish_unavailable=publish_unavailable,
                                   budget=min(3.0, max(0.1, deadline - time.monotonic())))
        self._state.join(max(0.1, min(1.0, deadline - time.monotonic())))
        with self._lock:  # one step for a concurrent write: it either has this transport or sees the stop
            transport, self._transport = self._transport, None
            self._stopped = started or transport is not None
        if transport is not None:
            pending = transport.flush(max(0.1, deadline - time.monotonic()))
            if pending:
                self.log.error("%d record(s) were not delivered before the stop deadline", pending)
            transport.close(max(0.1, deadline - time.monotonic()))
        if started:
            self.log.info("stopped")

    # -- state -------------------------------------------------------------------------

    def sync(self, timeout: float | None = None) -> None:
        """Wait until this process has applied every record the log held when called.

        After it returns, this process's reads answer every write acknowledged
        before the call (by any process), or something newer. Concurrent
        callers share one lookup of the log's end. Raises ``StaleRead`` (a
        ``TransportError``) when that cannot be done within ``timeout``.
        """
        self._check_process()
        if not self._started:
            return  # reads of a process that follows nothing go to the log itself
        self._state.sync(self.transport, self.settings.read_timeout if timeout is None else timeout)

    def _publish(self, record: Record) -> None:
        if self._stopped:  # a late write (a task that outlived the stop) must not reopen a producer
            raise RuntimeStopped(self.asset_uuid)
        transport = self._transport  # every set comes here: the property only when it has work to do
        if transport is None or self._pid != THIS_PROCESS.pid:
            with self._lock:  # stop() swaps the transport out under it: a write in that window sees the stop
                if self._stopped:
                    raise RuntimeStopped(self.asset_uuid)
                transport = self.transport
        transport.publish(record)  # failures come back through transport.on_failure
        self.counters.plain["records_published"] += 1

    def _delivery_failed(self, error: Exception) -> None:
        self.counters.add("delivery_failures")

    def get(self, attr_id: str) -> Record | None:
        self._check_process()
        with self._lock:
            record = self._cache.get(attr_id)
        if record is None and not self._started:
            record = self.transport.snapshot(self.asset_uuid).get(attr_id)
        return record

    def value(self, attr_id: str, default: Any = None) -> Any:
        record = self.get(attr_id)
        return default if record is None else record.value

    def set(self, attr_id: str, value: Any, *, tag: str | None = None) -> Record:
        """Validate, stamp now, update this process and publish."""
        attribute = self._attributes.get(attr_id)
        if attribute is None:
            known = ", ".join(sorted(self._attributes)) or "none"
            raise KeyError(f"attribute {attr_id!r} is not declared on asset {self.asset_uuid!r} (declared: {known})")
        # Checked by the declaration already: build the record directly (hot path).
        record = stamped_record(self.settings.asset_uuid, attr_id, attribute.check(value), attribute.check_tag(tag),
                                attribute.type, format_timestamp())
        self._check_process()
        self._publish(record)
        self._cache[attr_id] = record  # one dict store: atomic, readers need no lock
        return record

    def records(self) -> list[Record]:
        """Current attributes (not method advertisements), from this process's view."""
        self._check_process()
        if self._started:
            with self._lock:
                current = dict(self._cache)
        else:
            current = self.transport.snapshot(self.asset_uuid)
        return sorted((r for r in current.values() if r.type != METHOD), key=lambda r: r.id)

    @property
    def storage(self) -> Mapping[str, Storage]:
        """The platform's storages (``STORAGE``) by name: ``storage["data"].open("a.csv", "w")``."""
        if self._storages is None:  # paths only: nothing to rebuild after a fork
            self._storages = open_storages(self.settings.storage)
        return self._storages
