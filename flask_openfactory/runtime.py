"""The asset runtime of one app in one process: state, lifecycle, commands.

Nothing here knows HTTP. The runtime is cheap to build (``init_app`` builds
it) and does no I/O until ``start`` or the first read or write, always in the
process that uses it: a runtime inherited through ``fork`` leaves the parent's
clients untouched and makes its own.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

from .attributes import UNAVAILABLE, Attribute, EventAttribute, PlatformAttribute
from .calls import CallBook, CallEntry
from .commands import (
    ERROR,
    OK,
    ArgumentLimits,
    CommandResult,
    command_record,
    is_result,
    json_safe,
    new_envelope,
    result_correlation_id,
    result_record,
)
from .dispatch import Dispatcher, DispatcherState, DispatchSettings
from .duties import Duties, DutiesState, Runner, stop_runners
from .freshness import AppliedPosition, SharedLookup
from .logs import AssetLog, log_method_error
from .methods import MethodSpec
from .metrics import MethodResults
from .metrics_registry import MetricsTarget, register, withdraw
from .protocol import METHOD, Record, format_timestamp, validate_identifier
from .quiet import Repeats, fault_key
from .routing import routing_warnings
from .signing import SigningKeys, sign_envelope
from .storage import Storage, StorageConfig, open_storages
from .subscriptions import SubscriptionRunner, SubscriptionSpec
from .tasks import TaskRunner, TaskSpec
from .transports import Health, Transport, TransportError, TransportOptions, create_transport
from .transports.base import KEEP_ALIVE, Follower, TransportBusy
from .transports.locks import Membership

if TYPE_CHECKING:
    from .remote import RemoteAsset

_log = logging.getLogger("flask_openfactory.runtime")


AVAILABLE = "AVAILABLE"
ASSET_TYPE = "OpenFactoryApp"
STANDALONE = "process:"  # a deployment of one process (flask run, waitress, tests)
DEPLOYMENT_LOCK_SECONDS = 10.0  # bounded wait for another process's start or stop decision
CANDIDATE_GRACE = 0.5  # a retiring executor hands over to a candidate that stood this long
START_CHECK_SECONDS = 5.0  # the first contact with the log at start
CALL_WINDOW_MARGIN = 60.0  # calls are remembered this much past the max age (clock skew)


def _package_meta() -> tuple[str, str, str]:
    try:
        meta = metadata.metadata("flask-openfactory")
        # typeshed declares get() from 3.12; on 3.11 the object is an email Message, which has it too
        author, licence = meta.get("Author"), meta.get("License")  # type: ignore[attr-defined]
        return meta["Version"], author or "unknown", licence or "unknown"
    except metadata.PackageNotFoundError:
        return "unknown", "unknown", "unknown"


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    asset_uuid: str
    transport_url: str
    transport_options: TransportOptions = field(default_factory=TransportOptions)
    consumer_group: str | None = None
    execute_commands: bool = True
    command_max_age: float = 300.0
    command_timeout: float = 60.0
    command_concurrency: int = 1
    dedupe_size: int = 100_000  # answered calls remembered at most (within the max age)
    stop_timeout: float = 10.0
    call_wait: float = 20.0  # an HTTP call waits this long for its result, then answers 504
    read_timeout: float = 5.0  # a read that follows writes waits this long for the log's end
    application_version: str = "latest"
    application_manufacturer: str = "OpenFactoryIO"
    application_license: str = "Polyform Noncommercial License 1.0.0"
    # Signs outgoing commands and, when set, makes only signed ones run; never shown.
    command_secret: SigningKeys | None = field(default=None, repr=False)
    allowed_senders: frozenset[str] | None = None  # None: any sender may command this asset
    argument_limits: ArgumentLimits = field(default_factory=ArgumentLimits)  # larger commands are REJECTED
    storage: Mapping[str, StorageConfig] = field(default_factory=dict)  # from STORAGE, by name
    metrics_target: MetricsTarget | None = None  # registered with the platform's Prometheus registry

    def __post_init__(self) -> None:
        """Accept plain values (a secret string or list, any iterable of senders) too."""
        if self.command_secret is not None and not isinstance(self.command_secret, SigningKeys):
            object.__setattr__(self, "command_secret", SigningKeys(self.command_secret))
        if self.allowed_senders is not None and not isinstance(self.allowed_senders, frozenset):
            object.__setattr__(self, "allowed_senders", frozenset(self.allowed_senders))

    @property
    def group(self) -> str:
        return self.consumer_group or f"ofa-app-{self.asset_uuid}"


@dataclass(frozen=True, slots=True)
class FollowerState:
    """The follower of one process at one moment (``AssetRuntime.follower_state``)."""

    alive: bool  # its thread runs: this process's state and calls' results keep up with the log
    applied: int  # the log position it has applied up to; -1 before it applied anything


def standard_attributes() -> list[Attribute]:
    """The attributes every app publishes (contract section 3, plus AssetType)."""
    return [
        EventAttribute("avail", tag="Availability"),
        EventAttribute("application_version", tag="Application.Version"),
        EventAttribute("application_manufacturer", tag="Application.Manufacturer"),
        EventAttribute("application_license", tag="Application.License"),
        EventAttribute("openfactory_version", tag="Library.Version"),
        EventAttribute("openfactory_manufacturer", tag="Library.Manufacturer"),
        EventAttribute("openfactory_license", tag="Library.License"),
        PlatformAttribute("AssetType", tag="AssetType"),
    ]


# This process's pid, kept current across os.fork() (gunicorn's workers): every
# attribute set checks it, and os.getpid() is a system call (~0.3 µs) each time.
_this_pid = os.getpid()


def _after_fork() -> None:
    global _this_pid
    _this_pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


class AssetRuntime:
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
        self._attributes: dict[str, Attribute] = {a.id: a for a in standard_attributes()}
        self._standard = frozenset(self._attributes)
        self._methods: dict[str, MethodSpec] = {}
        self._tasks: dict[str, TaskSpec] = {}
        self._subscriptions: dict[str, SubscriptionSpec] = {}
        self._storages: dict[str, Storage] | None = None
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        """Everything that belongs to one process; rebuilt after a fork."""
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._cache: dict[str, Record] = {}
        self._transport: Transport | None = None
        self._started = False
        self._stopped = False  # stop() closed the transport: a late write must not reopen it
        self._stopping = threading.Event()
        self._follower_thread: threading.Thread | None = None
        self._dispatcher: Dispatcher | None = None
        self._duties: Duties | None = None  # tasks and subscriptions of the executing process
        self._watchers: list[Runner] = []  # every-worker subscriptions
        self.counters: Counter[str] = Counter()
        self.method_results = MethodResults()  # results seen on the log, for metrics
        self._check_states: dict[str, tuple[Any, float]] = {}  # readiness check -> (state, since)
        self._checks_lock = threading.Lock()  # not self._lock: a probe never waits on a slow start
        self.started_at: float | None = None
        self.start_error: str | None = None
        # The log's memory of recent calls (duplicate suppression, idempotent HTTP calls).
        self.calls = CallBook(self.settings.command_max_age + CALL_WINDOW_MARGIN, self.settings.dedupe_size)
        self._applied = AppliedPosition()  # how far the follower has applied the log
        self._follower: Follower | None = None
        self._end_lookup: SharedLookup | None = None
        self._membership: Membership | None = None
        self._eligible: Callable[[], bool] = lambda: True
        self._retiring = False  # stop() began: this process hands the role over
        self._standing = False  # a candidate for the executor role (see _may_execute)
        self._successor_seen: float | None = None  # when a retiring executor first saw a candidate
        self._deployment = STANDALONE + _process_identity(os.getpid())

    def _check_process(self) -> None:
        if self._pid != _this_pid:
            if self._transport is not None:
                KEEP_ALIVE.append(self._transport)
            if self._dispatcher is not None:
                KEEP_ALIVE.append(self._dispatcher)
            self._reset_process_state()

    # -- declarations (before start) ----------------------------------------------

    def declare_attribute(self, attribute: Attribute) -> None:
        existing = self._attributes.get(attribute.id)
        if existing is not None and existing is not attribute:
            raise ValueError(f"attribute {attribute.id!r} is declared twice on asset {self.asset_uuid!r}")
        if attribute.id in self._methods:
            raise ValueError(f"{attribute.id!r} is already a method of asset {self.asset_uuid!r}")
        self._attributes[attribute.id] = attribute

    def declare_method(self, spec: MethodSpec) -> None:
        existing = self._methods.get(spec.name)
        if existing is not None and existing.func is not spec.func:
            raise ValueError(f"method {spec.name!r} is declared twice on asset {self.asset_uuid!r}")
        if spec.name in self._attributes:
            raise ValueError(f"{spec.name!r} is already an attribute of asset {self.asset_uuid!r}")
        self._methods[spec.name] = spec

    def declare_task(self, spec: TaskSpec) -> None:
        existing = self._tasks.get(spec.name)
        if existing is not None and existing.func is not spec.func:
            raise ValueError(f"background task {spec.name!r} is declared twice on asset {self.asset_uuid!r}")
        if existing is None:
            self.declare_attribute(spec.condition)
        self._tasks[spec.name] = spec

    def declare_subscription(self, spec: SubscriptionSpec) -> None:
        existing = self._subscriptions.get(spec.name)
        if existing is not None and existing.handler is not spec.handler:
            raise ValueError(f"subscription {spec.name!r} is declared twice on asset {self.asset_uuid!r} "
                             "(name one with @subscribe(..., name=...))")
        self._subscriptions[spec.name] = spec

    @property
    def asset_uuid(self) -> str:
        return self.settings.asset_uuid

    @property
    def methods(self) -> dict[str, MethodSpec]:
        return dict(self._methods)

    @property
    def declared_attributes(self) -> dict[str, Attribute]:
        return dict(self._attributes)

    # -- lifecycle -------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._pid == _this_pid and self._started

    @property
    def stopped(self) -> bool:
        """``stop()`` ran in this process since the last start."""
        return self._pid == os.getpid() and self._stopped

    @property
    def transport_created(self) -> bool:
        """Whether this process opened the transport already (it can no longer be replaced)."""
        return self._pid == os.getpid() and self._transport is not None

    @property
    def transport(self) -> Transport:
        """This process's transport, created on first use."""
        transport = self._transport
        if transport is not None and self._pid == _this_pid:
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
            self._stopped = False
            self._retiring = False
            if eligible is not None:
                self._eligible = eligible
            if deployment is not None:
                self._deployment = deployment
            try:
                self._start()
            except Exception as exc:
                self.start_error = f"{type(exc).__name__}: {exc}"
                self._abandon_start()
                raise
            self.start_error = None
            self._started = True
            self.started_at = time.time()
            _stop_at_exit(self)
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
        snapshot = transport.snapshot(self.asset_uuid)
        self._cache.update((rid, r) for rid, r in snapshot.items() if self._cacheable(r))
        # Connected now, not at the first write: a process that announces nothing still
        # writes calls, and its readiness and reads need the log's health from the start.
        transport.check(START_CHECK_SECONDS)
        if self.settings.execute_commands and (self._tasks or any(
                not s.every_worker for s in self._subscriptions.values())):
            self._duties = Duties(self._executor_runners, grace=self.settings.stop_timeout, log=self.log)
        # Follow first, then read back the window: together they miss no call.
        self._follower = transport.follow(self.asset_uuid, skip_own_writes=True)
        self._applied.reset()
        self._end_lookup = SharedLookup(lambda: transport.end_position(self.asset_uuid))
        self.calls.observe(transport.calls_since(self.asset_uuid, time.time() - self.calls.window))
        self._follower_thread = threading.Thread(
            target=self._follow, args=(transport,), name="ofa-follow", daemon=True
        )
        self._follower_thread.start()
        self._membership = transport.membership(self.asset_uuid)
        self._join_deployment(snapshot)
        if self.settings.execute_commands:
            self._dispatcher = Dispatcher(
                DispatchSettings(
                    asset_uuid=self.asset_uuid,
                    group=self.settings.group,
                    max_age=self.settings.command_max_age,
                    timeout=self.settings.command_timeout,
                    concurrency=self.settings.command_concurrency,
                    dedupe_size=self.settings.dedupe_size,
                    signing_keys=self.settings.command_secret,
                    allowed_senders=self.settings.allowed_senders,
                    argument_limits=self.settings.argument_limits,
                ),
                transport=transport,
                methods=lambda: self._methods,
                context=self._context,
                counters=self.counters,
                on_ownership=self._ownership_changed,
                completed=self.calls,
                eligible=self._may_execute,
                before_executing=self._catch_up_before_executing,
                on_result=lambda record: self.calls.observe((record,)),  # as any process reads it back
                on_unrecorded=self.calls.unrecorded,
            )
            if self._duties is not None:
                self._duties.start()
            self._dispatcher.start()
        self._watchers = self._subscription_runners(every_worker=True)
        for watcher in self._watchers:
            watcher.start()

    def serve_as(self, *, eligible: Callable[[], bool], deployment: str) -> None:
        """Set before a start that another component makes (a gunicorn worker's starter)."""
        self._check_process()  # a runtime inherited through fork is reset first, not after
        self._eligible, self._deployment = eligible, deployment

    def _may_execute(self) -> bool:
        """Whether this process may hold the executor role now (asked by the dispatcher each poll).

        A process about to stop (a gunicorn worker told to exit, or ``stop``
        begun) withdraws its candidacy: it never takes the role, and hands it
        over as soon as another process could take it. Until then it keeps
        executing, so that a reload whose new workers are still booting leaves
        no gap with nobody executing.
        """
        if self._eligible() and not self._retiring and not self._stopping.is_set():
            return True
        membership = self._membership
        if membership is None:
            return False
        if self._standing:
            membership.withdraw()
            self._standing = False
        dispatcher = self._dispatcher
        if dispatcher is None or not dispatcher.owns or self._stopping.is_set():
            return False
        if not membership.other_candidates():
            self._successor_seen = None
            return True
        # Processes told to stop at the same moment (a reload) withdraw within a poll or
        # two: hand over once a candidate has stood for the grace time, not to a stale one.
        now = time.monotonic()
        if self._successor_seen is None:
            self._successor_seen = now
        return now - self._successor_seen < CANDIDATE_GRACE

    def _catch_up_before_executing(self) -> None:
        """A new executor knows every answer the log holds before it runs anything."""
        self.sync(max(self.settings.read_timeout, 10.0))

    def _ownership_changed(self, owns: bool) -> None:
        """One line per lifecycle event; the duties follow the command log."""
        if owns:
            self.log.info("executing commands here")
        else:
            self.log.info("handed over: no longer executing commands here")
        if self._duties is not None:
            self._duties.ownership(owns)

    def _executor_runners(self) -> list[Runner]:
        """Built each time this process takes the executor role (in the duties thread)."""
        runners: list[Runner] = [
            TaskRunner(spec, context=self._context, report=self._report_condition, log=self.log,
                       counters=self.counters)
            for spec in self._tasks.values()
        ]
        return runners + self._subscription_runners(every_worker=False)

    def _subscription_runners(self, *, every_worker: bool) -> list[Runner]:
        specs = [s for s in self._subscriptions.values() if s.every_worker == every_worker]
        if not specs:
            return []
        with (self._context or nullcontext)():  # a watched UUID may come from the app's config
            watched = [(spec, spec.resolve_asset()) for spec in specs]
        return [
            SubscriptionRunner(spec, uuid, transport=self.transport, group=self.settings.group,
                               context=self._context, log=self.log, counters=self.counters)
            for spec, uuid in watched
        ]

    def _report_condition(self, attr_id: str, value: str, level: str) -> None:
        self.set(attr_id, value, tag=level)

    def _abandon_start(self) -> None:
        """A failed start leaves no thread behind (the start guard will try again)."""
        self._stopping.set()
        self._leave_deployment(publish_unavailable=False, budget=1.0)
        self._stop_duties(1.0)
        dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is not None:
            dispatcher.stop(1.0)
        if self._follower_thread is not None:
            self._follower_thread.join(1.0)
            self._follower_thread = None

    def _stop_duties(self, timeout: float) -> None:
        duties, self._duties = self._duties, None
        watchers, self._watchers = self._watchers, []
        if duties is not None:
            duties.stop(timeout)
        if watchers:
            stop_runners(watchers, min(timeout, 1.0))

    def _subscription_runners_here(self) -> list[SubscriptionRunner]:
        duties = self._duties
        runners = list(self._watchers) + (list(duties.runners) if duties is not None else [])
        return [r for r in runners if isinstance(r, SubscriptionRunner) and r.alive]

    def running_subscriptions(self) -> list[str]:
        """Names of the subscriptions running in this process now."""
        return sorted(r.spec.name for r in self._subscription_runners_here())

    def subscriptions_settled(self, timeout: float = 5.0) -> bool:
        """True once every subscription running here has handled what the log held (tests).

        Waits first for the executor role's subscriptions to start, if this
        process is to run them.
        """
        deadline = time.monotonic() + timeout
        duties = self._duties
        if duties is not None and not duties.running(timeout):  # the executor role not taken yet
            return False
        return all(r.settled(max(0.0, deadline - time.monotonic())) for r in self._subscription_runners_here())

    @property
    def tasks(self) -> dict[str, TaskSpec]:
        return dict(self._tasks)

    @property
    def subscriptions(self) -> dict[str, SubscriptionSpec]:
        return dict(self._subscriptions)

    def _join_deployment(self, snapshot: Mapping[str, Record]) -> None:
        """Become one of the deployment's processes; the first of a start announces it.

        The marker names the start (the gunicorn master, or this process) and
        what is announced: a reload with changed methods announces again.
        """
        membership = self._membership
        assert membership is not None
        marker = f"{self._deployment} {self._identity_digest()}"
        with membership.exclusive(DEPLOYMENT_LOCK_SECONDS):
            # Before this process serves a call: a first executor never starts past one.
            self.transport.mark_start(self.asset_uuid, self.settings.group)
            membership.join()
            if self.settings.execute_commands and self._eligible():
                membership.stand()
                self._standing = True
            if membership.marker() == marker:
                return
            self._publish_identity(snapshot)
            pending = self.transport.flush(DEPLOYMENT_LOCK_SECONDS / 2)
            if pending:  # not durable: the next process to start announces again
                self.log.warning("%d start-up record(s) not yet delivered; another start will repeat them",
                                 pending)
                return
            membership.set_marker(marker)
        self.log.info("announced the asset (start-up records written once for this deployment)")

    def _leave_deployment(self, *, publish_unavailable: bool, budget: float) -> None:
        """The last process of the deployment to stop says the asset is unavailable."""
        membership, self._membership = self._membership, None
        if membership is None:
            return
        try:
            with membership.exclusive(max(0.1, budget)):
                membership.leave()
                if membership.others_present():
                    return
                if self._deployment.startswith(STANDALONE):
                    membership.set_marker("")  # the next start of this process announces again
                if publish_unavailable:
                    self._publish_unavailable(budget)
        except Exception:
            self.log.exception("could not leave the deployment cleanly")

    def _publish_unavailable(self, budget: float) -> None:
        """The whole deployment stops: availability, and the metrics target withdrawn."""
        self.set("avail", UNAVAILABLE)
        self.withdraw_metrics()
        if self.transport.flush(max(0.1, budget)):
            self.log.error("avail=UNAVAILABLE not delivered before the stop deadline")

    def close_deployment(self, budget: float) -> bool:
        """For a server whose own processes are gone (the gunicorn master at exit):
        publish ``UNAVAILABLE`` unless another server on this host still serves the asset."""
        membership = self.transport.membership(self.asset_uuid)
        with membership.exclusive(budget):
            if membership.others_present():
                self.log.info("another server on this host still serves the asset: avail stays AVAILABLE")
                return False
            self._publish_unavailable(budget)
        return True

    def _identity_digest(self) -> str:
        parts = [repr(sorted(self._fixed_identity().items()))]
        parts += [f"{spec.name}={spec.advertisement()}" for spec in self._methods.values()]
        parts += sorted(self._attributes)
        return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:16]

    def _fixed_identity(self) -> dict[str, Any]:
        version, manufacturer, license_ = _package_meta()
        return {
            "application_version": self.settings.application_version,
            "application_manufacturer": self.settings.application_manufacturer,
            "application_license": self.settings.application_license,
            "openfactory_version": version,
            "openfactory_manufacturer": manufacturer,
            "openfactory_license": license_,
            "AssetType": ASSET_TYPE,
            "avail": AVAILABLE,
        }

    def _publish_identity(self, snapshot: Mapping[str, Record]) -> None:
        """Metadata once per start; user attributes keep the platform's last value."""
        fixed = self._fixed_identity()
        for attr_id, value in fixed.items():
            self.set(attr_id, value)
        for spec in self._methods.values():
            self._publish(Record.create(self.asset_uuid, spec.name, spec.advertisement(), tag=METHOD, type=METHOD))
        reported = {task.condition.id for task in self._tasks.values()}  # only the task's runner sets them
        for attribute in self._attributes.values():
            if attribute.id not in self._standard and attribute.id not in snapshot and attribute.id not in reported:
                self.set(attribute.id, attribute.default)

    def halt_commands(self) -> None:
        """Start no further command in this process, now, without waiting (``stop`` follows)."""
        dispatcher = self._dispatcher
        if dispatcher is not None and self._pid == os.getpid():
            dispatcher.halt()

    def _linger(self, seconds: float) -> None:
        """Keep executing until another process took the role (a successor is booting), bounded."""
        dispatcher = self._dispatcher
        if seconds <= 0 or dispatcher is None or not dispatcher.owns:
            return
        self.log.info("stopping: executing until another process takes the command log (at most %.1fs)", seconds)
        deadline = time.monotonic() + seconds
        while dispatcher.owns and time.monotonic() < deadline:
            self._stopping.wait(0.02)

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
        budget = self.settings.stop_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        self._retiring = True
        self._linger(min(linger, budget / 2))
        with self._lock:
            started, self._started = self._started, False
            dispatcher, self._dispatcher = self._dispatcher, None
        self._stopping.set()
        # Tasks first, while this process still holds the command log: a successor
        # must not start them before they have ended here.
        self._stop_duties(max(0.1, deadline - time.monotonic() - 0.5))
        if dispatcher is not None:
            dispatcher.stop(max(0.1, deadline - time.monotonic()))
        if started:
            self._leave_deployment(publish_unavailable=publish_unavailable,
                                   budget=min(3.0, max(0.1, deadline - time.monotonic())))
        if self._follower_thread is not None:
            self._follower_thread.join(max(0.1, min(1.0, deadline - time.monotonic())))
            self._follower_thread = None
        transport, self._transport = self._transport, None
        if transport is not None:
            pending = transport.flush(max(0.1, deadline - time.monotonic()))
            if pending:
                self.log.error("%d record(s) were not delivered before the stop deadline", pending)
            transport.close(max(0.1, deadline - time.monotonic()))
        self._stopped = started or transport is not None
        if started:
            self.log.info("stopped")

    # -- state -------------------------------------------------------------------------

    def _follow(self, transport: Transport) -> None:
        """Apply records written by other processes (and echoes of our own)."""
        follower = self._follower
        faults = Repeats(self.log, "following the asset's log")
        while not self._stopping.is_set():
            try:
                if follower is None:
                    follower = self._follower = transport.follow(self.asset_uuid, skip_own_writes=True)
                records = follower.poll(0.2)
                faults.cleared()
                if records:
                    self._apply(records)
                self._applied.advance(follower.position)
                self._commands_check()  # stamps an ownership change within one poll
            except Exception as exc:  # the shared state depends on this thread: reopen, never die
                self.counters["follow_errors"] += 1
                faults.failed(fault_key(f"{type(exc).__name__}: {exc}"), "following the asset's log failed; "
                              "reopening: %s: %s", type(exc).__name__, exc, exc_info=exc)
                if follower is not None:
                    _close_quietly(follower)
                    follower = self._follower = None
                self._stopping.wait(1.0)
        if follower is not None:
            _close_quietly(follower)

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
        budget = self.settings.read_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        lookup, follower = self._end_lookup, self._follower
        if lookup is None:
            return
        health = self.transport.health()
        if not health.ok:  # fail fast: the end cannot be read while the log is away
            raise StaleRead(f"the log of {self.asset_uuid!r} is unreachable ({health.detail}): the latest "
                            "state cannot be confirmed, so none is given; try again when /ofa/ready answers 200")
        try:
            end = lookup(budget)
        except TimeoutError:
            raise StaleRead(f"the end of the log of {self.asset_uuid!r} could not be read within {budget:g}s; "
                            "try again when the log answers") from None
        if follower is not None:
            follower.wake()
        if not self._applied.wait_for(end, max(0.0, deadline - time.monotonic())):
            raise StaleRead(
                f"this process (pid {os.getpid()}) has not read the log of {self.asset_uuid!r} up to where it "
                f"ended when the read began (position {end}, applied {self._applied.value}) within {budget:g}s; "
                "the answer could be stale, so none is given: try again")

    def _apply(self, records: Iterable[Record]) -> None:
        records = list(records)
        for record in records:
            if is_result(record):
                self._observe_result(record)
        self.calls.observe(records)
        with self._lock:
            for record in records:
                if not self._cacheable(record):
                    continue
                current = self._cache.get(record.id)
                if current is None or not _older(record, current):
                    self._cache[record.id] = record

    def _cacheable(self, record: Record) -> bool:
        """Declared IDs (and our methods' commands and results) only: anyone may write
        any ID under our key, and the cache must stay bounded."""
        rid = record.id
        if rid in self._attributes or rid in self._methods:
            return True
        base, _, suffix = rid.rpartition("_")
        return suffix in ("CMD", "RESULT") and base in self._methods

    def _publish(self, record: Record) -> None:
        if self._stopped:  # a late write (a task that outlived the stop) must not reopen a producer
            raise TransportError(
                f"the OpenFactory runtime of {self.asset_uuid!r} was stopped in this process "
                f"(pid {os.getpid()}); nothing more is published unless it is started again"
            )
        self.transport.publish(record)  # failures come back through transport.on_failure
        self.counters["records_published"] += 1

    def _delivery_failed(self, error: Exception) -> None:
        self.counters["delivery_failures"] += 1

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
        record = Record(self.asset_uuid, attr_id, attribute.check(value), attribute.check_tag(tag),
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

    # -- methods -----------------------------------------------------------------------

    def invoke(
        self, name: str, kwargs: Mapping[str, Any], *, sender_uuid: str, correlation_id: str | None = None
    ) -> CommandResult:
        """Run a method in the calling thread (HTTP) and publish its ``_RESULT``."""
        spec = self._methods[name]
        cid = correlation_id or new_envelope(sender_uuid).correlation_id
        started = time.monotonic()
        try:
            value = spec.func(**kwargs)
        except Exception as exc:
            log_method_error(self.log, name, cid, exc)
            result = CommandResult(name, cid, sender_uuid, ERROR, error=f"{type(exc).__name__}: {exc}",
                                   duration_ms=(time.monotonic() - started) * 1000.0)
        else:
            result = CommandResult(name, cid, sender_uuid, OK, result=json_safe(value),
                                   duration_ms=(time.monotonic() - started) * 1000.0)
        self.counters[f"http_{result.status.lower()}"] += 1
        self._publish(result_record(self.asset_uuid, result))
        return result

    def call(
        self,
        name: str,
        arguments: Mapping[str, Any],
        *,
        sender_uuid: str,
        correlation_id: str | None = None,
        wait: float | None = None,
    ) -> CommandResult:
        """Call one of this asset's methods through its log, as a command, and wait for the result.

        The elected executor runs it in the log's order, with every rule a
        command has (concurrency, expiry, signatures, senders, limits). The
        correlation id is an idempotency key: a call whose id the log already
        holds is never written again; its result (or the wait for it) is shared.
        Raises ``ResultNotRecorded`` when the method ran here and the log
        refused its result, ``CallPending`` when no result came within ``wait`` (the call
        stays in the log), ``CallConflict`` for an id used by another call.
        """
        self._check_process()
        if not self._started:
            raise TransportError(f"the OpenFactory runtime of {self.asset_uuid!r} is not started in this "
                                 f"process (pid {os.getpid()}): a call needs it to follow the log for the result")
        if name not in self._methods:
            raise KeyError(f"method {name!r} is not declared on asset {self.asset_uuid!r}")
        envelope = new_envelope(sender_uuid, dict(arguments), correlation_id=correlation_id)
        cid = envelope.correlation_id
        known = self.calls.check_same_call(cid, name, envelope.arguments) if correlation_id else None
        if known is not None and known.result is not None:
            self.counters["http_replayed"] += 1
            return known.result
        if known is None:
            health = self.transport.health()
            if not health.ok:
                raise TransportError(f"the asset's log is unreachable ({health.detail}): the call was not "
                                     "written and did not run; retry when /ofa/ready answers 200")
            if self.settings.command_secret is not None:
                envelope = sign_envelope(envelope, self.asset_uuid, name, self.settings.command_secret)
            busy = self.transport.saturated()
            if busy is not None:
                raise busy  # refused before anything was written
            try:
                self._publish(command_record(self.asset_uuid, name, envelope))
            except TransportBusy:
                raise
            except TransportError as exc:
                raise TransportError(f"the call was not written to the asset's log and did not run: {exc}") from exc
        budget = self.settings.call_wait if wait is None else wait
        result = self.calls.wait(cid, budget)
        if result is None:
            entry = self.calls.get(cid)
            if entry is not None and entry.unrecorded is not None:
                self.counters["http_ran_unrecorded"] += 1
                raise ResultNotRecorded(cid, name, entry.unrecorded)
            self.counters["http_pending"] += 1
            raise CallPending(cid, budget)
        self.counters[f"http_{str(result.status).lower()}"] += 1
        return result

    def find_call(self, correlation_id: str) -> CallEntry | None:
        """What the log holds of a call (within the max age): its method and result, if any.

        This process's book first; else the log itself (a process that
        started after the call, or the CLI).
        """
        self._check_process()
        entry = self.calls.get(correlation_id)
        if entry is not None and (entry.result is not None or self._started):
            return entry
        book = CallBook(self.calls.window, self.settings.dedupe_size)
        book.observe(self.transport.calls_since(self.asset_uuid, time.time() - self.calls.window))
        return book.get(correlation_id)

    def send_command(
        self,
        target_uuid: str,
        method: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        wait: float | None = None,
        sender_uuid: str | None = None,
    ) -> tuple[str, CommandResult | None]:
        """Write ``<method>_CMD`` on another asset, as any asset would.

        With ``wait``, follow the target's log for the matching ``_RESULT``
        (None if none came in time). Needs no started runtime (the CLI uses it).
        Signed when ``command_secret`` is configured.
        """
        validate_identifier("target asset UUID", target_uuid)
        validate_identifier("method name", method)
        envelope = new_envelope(sender_uuid or self.asset_uuid, dict(arguments or {}))
        if self.settings.command_secret is not None:
            envelope = sign_envelope(envelope, target_uuid, method, self.settings.command_secret)
        transport = self.transport
        follower = transport.follow(target_uuid) if wait else None
        try:
            transport.publish(command_record(target_uuid, method, envelope))
            if follower is None:
                return envelope.correlation_id, None
            transport.flush(wait or 0)
            deadline = time.monotonic() + (wait or 0)
            while (remaining := deadline - time.monotonic()) > 0:
                for record in follower.poll(min(remaining, 0.5)):
                    if is_result(record) and result_correlation_id(record) == envelope.correlation_id:
                        return envelope.correlation_id, CommandResult.from_record(record)
            return envelope.correlation_id, None
        finally:
            if follower is not None:
                follower.close()

    def asset(self, asset_uuid: str) -> RemoteAsset:
        """Another asset: its current state and methods, and ``.call(...)`` to command it."""
        from .remote import RemoteAsset

        return RemoteAsset(self, asset_uuid)

    def asset_by_uns(self, uns_id: str) -> RemoteAsset:
        """Another asset by its UNS id, resolved through ksqlDB (the reference's ``AssetUNS``)."""
        from .remote import RemoteAsset

        return RemoteAsset.by_uns(self, uns_id)

    @property
    def storage(self) -> Mapping[str, Storage]:
        """The platform's storages (``STORAGE``) by name: ``storage["data"].open("a.csv", "w")``."""
        if self._storages is None:  # paths only: nothing to rebuild after a fork
            self._storages = open_storages(self.settings.storage)
        return self._storages

    # -- status ------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether this process can serve the asset, and what is missing since when."""
        checks = self.health_checks()
        return all(h.ok for h in checks.values()), {name: h.as_dict() for name, h in checks.items()}

    def health_checks(self) -> dict[str, Health]:
        """Each readiness check; its ``since`` moves only when its state changes."""
        self._check_process()
        checks: dict[str, Health] = {}
        if self._started:
            checks["runtime"] = self._stamp("runtime", True, "started", since=self.started_at)
        else:
            checks["runtime"] = self._stamp("runtime", False, self.start_error or "not started in this process")
        if self._transport is not None or self._started:
            health = self.transport.health()
            checks["transport"] = self._stamp("transport", health.ok, health.detail, since=health.since)
        else:
            checks["transport"] = self._stamp("transport", False, "not connected in this process")
        commands = self._commands_check()
        if commands is not None:
            checks["commands"] = commands
        duties = self._duties
        if duties is not None and duties.error is not None:
            checks["duties"] = self._stamp("duties", False, duties.error)
        return checks

    def _commands_check(self) -> Health | None:
        if not (self.settings.execute_commands and self._started):
            return None
        dispatcher = self._dispatcher
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
            return self._stamp("commands", False, detail, state="unrecorded")
        return self._stamp("commands", alive, detail, state=owns)

    def _stamp(self, name: str, ok: bool, detail: str, *, state: Any = None, since: float | None = None) -> Health:
        """The check with the time its (ok, state) last changed, as this process saw it.

        A source that knows when the change happened (a transport's tracker,
        the start time) gives ``since``; otherwise the first sighting counts.
        """
        key = (ok, state)
        with self._checks_lock:
            seen = self._check_states.get(name)
            if seen is None or seen[0] != key:
                seen = self._check_states[name] = (key, time.time() if since is None else since)
        return Health(ok, detail, seen[1])

    def _observe_result(self, record: Record) -> None:
        try:
            result = CommandResult.from_record(record)
        except Exception:  # anyone may write to the log: a bad result must not stop following
            return
        self.method_results.observe(result.method, str(result.status), result.duration_ms, self._methods)

    # -- inspection: read-only views for status, metrics, the CLI and tests ---------------
    # Snapshots (frozen dataclasses, copies) rather than the objects behind them, so that
    # whoever looks cannot change the runtime, and the internals can move freely (only
    # the runners in DutiesState are live: a stop request must be seen reaching them).

    def dispatcher_state(self) -> DispatcherState | None:
        """This process's command dispatcher; None when it has none (not started, or it
        executes no commands: ``OPENFACTORY_EXECUTE_COMMANDS`` off)."""
        self._check_process()
        dispatcher = self._dispatcher
        return dispatcher.state() if dispatcher is not None else None

    @property
    def owns_command_log(self) -> bool:
        """Whether this process executes the asset's commands now (its dispatcher holds the log)."""
        self._check_process()
        dispatcher = self._dispatcher
        return dispatcher is not None and dispatcher.owns

    def duties_state(self) -> DutiesState | None:
        """The executor role's tasks and subscriptions here; None when this process has no
        such duties (it executes no commands, or the app declares none)."""
        self._check_process()
        duties = self._duties
        return duties.state() if duties is not None else None

    def follower_state(self) -> FollowerState:
        """The thread that applies the asset's log to this process's state (reads wait on it)."""
        self._check_process()
        thread = self._follower_thread
        return FollowerState(alive=thread is not None and thread.is_alive(), applied=self._applied.value)

    def cached_records(self) -> dict[str, Record]:
        """A copy of this process's current values by ID, commands and results included
        (``records()`` gives the attributes only); it holds declared IDs only, so stays bounded."""
        self._check_process()
        with self._lock:
            return dict(self._cache)

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


class StaleRead(TransportError):
    """A read that must follow writes could not be brought up to date in time."""


class CallPending(TransportError):
    """A call is in the log but its result did not come within the wait; it is not lost."""

    ran: bool | None = None  # unknown: it may not have run yet

    def __init__(self, correlation_id: str, waited: float, message: str | None = None) -> None:
        super().__init__(message or (
            f"no result within {waited:g}s: the call {correlation_id} is in the log and runs when the "
            f"executor reaches it; fetch its result later by its correlation id"))
        self.correlation_id = correlation_id
        self.waited = waited


class ResultNotRecorded(CallPending):
    """The method ran, and the log refused its result: never "nothing happened", never run again."""

    ran = True

    def __init__(self, correlation_id: str, method: str, reason: str) -> None:
        super().__init__(correlation_id, 0.0, (
            f"{method} ran (call {correlation_id}), but the asset's log refused its result: {reason}. "
            f"The result is written as soon as the log takes writes again; fetch it by its correlation "
            f"id. A retry with the same correlation id does not run it again; one without is a new call"))
        self.method = method
        self.reason = reason


def process_start_time(pid: int) -> int | None:
    """When a process started (clock ticks since boot, from /proc), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _process_identity(pid: int) -> str:
    """A process named so that a reused pid is not mistaken for it (its start time)."""
    started = process_start_time(pid)
    return f"{pid}@{'?' if started is None else started}"


def gunicorn_deployment(master_pid: int) -> str:
    """The deployment of a gunicorn worker: its master (reloads and recycled workers stay in it)."""
    return f"gunicorn:{_process_identity(master_pid)}"


def _stop_at_exit(runtime: AssetRuntime) -> None:
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


def _close_quietly(follower: Any) -> None:
    try:
        follower.close()
    except Exception:
        _log.exception("closing a follower failed")


def _older(record: Record, current: Record) -> bool:
    """A replayed record must not undo a newer value (timestamps are fixed-width)."""
    if record.timestamp == UNAVAILABLE or current.timestamp == UNAVAILABLE:
        return False
    return record.timestamp < current.timestamp
