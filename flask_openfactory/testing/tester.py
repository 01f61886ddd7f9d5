"""The tester: an app's runtime started and driven as other assets drive it.

Calls methods through the log, records what the app publishes (through
``AssetRecords``) and feeds other assets' updates into its subscriptions.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..wire.commands import CommandResult, is_result, result_correlation_id
from ..wire.protocol import CONDITION, SAMPLES, Record
from .matching import ANY
from .records import AssetRecords
from .runtime_lookup import runtime_of

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient, FlaskCliRunner

    from ..runtime import AssetRuntime

__all__ = ["DEFAULT_SENDER", "DEFAULT_TIMEOUT", "NoResultError", "OpenFactoryTester"]

DEFAULT_TIMEOUT = 5.0
DEFAULT_SENDER = "PYTEST"


class NoResultError(AssertionError, TimeoutError):
    """A command got no ``_RESULT`` in time (an AssertionError, so pytest reports it as a failure)."""


class OpenFactoryTester:
    """An app under test: its runtime started, driven as other assets drive it.

    ``with OpenFactoryTester(app) as ofa:`` starts the runtime (and stops it
    on exit if it started it); ``start()`` / ``stop()`` do the same by hand.
    ``feed()`` before the start pre-loads another asset's current state, which
    the app's subscriptions receive first when they start.
    """

    def __init__(self, app: Flask, *, timeout: float = DEFAULT_TIMEOUT,
                 sender_uuid: str = DEFAULT_SENDER) -> None:
        self.app = app
        self.runtime: AssetRuntime = runtime_of(app)
        self.timeout = timeout  # default wait for results and subscriptions, in seconds
        self.sender_uuid = sender_uuid  # who the tester's commands claim to come from
        self._own: AssetRecords | None = None
        self._followed: list[AssetRecords] = []
        self._stops_runtime = False
        self._client: FlaskClient | None = None
        self._cli: FlaskCliRunner | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def asset_uuid(self) -> str:
        return self.runtime.asset_uuid

    @property
    def started(self) -> bool:
        return self._own is not None

    def start(self) -> OpenFactoryTester:
        """Start the runtime; its identity records are recorded too; subscriptions are running after."""
        if self._own is not None:
            raise RuntimeError("this OpenFactoryTester is started already")
        self._stops_runtime = not self.runtime.started
        self._own = AssetRecords(self.runtime.transport, self.asset_uuid)  # before start: sees everything
        try:
            self.runtime.start()
            if self.runtime.subscriptions and not self._wait_for_subscriptions(self.timeout, startable=True):
                self._settle(self.timeout, "the current state at start", startable=True)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close the followers; stop the runtime if this tester started it."""
        for records in [*self._followed, *([self._own] if self._own is not None else [])]:
            records.close()
        self._followed.clear()
        self._own = None
        if self._stops_runtime:
            self._stops_runtime = False
            self.runtime.stop()

    def __enter__(self) -> OpenFactoryTester:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _records(self) -> AssetRecords:
        if self._own is None:
            raise RuntimeError("the OpenFactoryTester is not started: use 'with OpenFactoryTester(app) as ofa:'")
        return self._own

    # -- Flask's own test tools --------------------------------------------------------------

    @property
    def client(self) -> FlaskClient:
        """The app's test client (one per tester, so cookies persist)."""
        if self._client is None:
            self._client = self.app.test_client()
        return self._client

    @property
    def cli(self) -> FlaskCliRunner:
        """The app's CLI runner: ``ofa.cli.invoke(args=["ofa", "status"])``."""
        if self._cli is None:
            self._cli = self.app.test_cli_runner()
        return self._cli

    # -- commands ----------------------------------------------------------------------------

    def call(self, method: str, /, *, timeout: float | None = None, **arguments: Any) -> CommandResult:
        """Call ``method(**arguments)`` as another asset would and return its result.

        The command goes through the log and the real dispatcher (argument
        conversion, rejection, signing when configured). Fails with
        ``NoResultError`` when no result came within ``timeout`` (default
        ``self.timeout``). A method with a parameter named ``timeout``: use
        ``command()``.
        """
        return self.command(method, arguments, timeout=timeout)

    def command(self, method: str, arguments: Mapping[str, Any] | None = None, *,
                timeout: float | None = None, sender_uuid: str | None = None) -> CommandResult:
        """``call`` with the arguments as a mapping and a chosen sender UUID."""
        own = self._records()
        wait = self.timeout if timeout is None else timeout
        cid, result = self.runtime.send_command(
            self.asset_uuid, method, dict(arguments or {}), wait=wait, sender_uuid=sender_uuid or self.sender_uuid)
        if result is None:
            shown = ", ".join(f"{k}={v!r}" for k, v in (arguments or {}).items())
            raise NoResultError(
                f"no {method}_RESULT on asset {self.asset_uuid!r} within {wait:g}s for the command "
                f"{method}({shown}) (correlation id {cid}): the method runs longer than that, or no "
                "process of this asset executes commands (OPENFACTORY_EXECUTE_COMMANDS, or another "
                "runtime of the same asset on this transport owns its command log)"
            )
        # Everything the method published comes before its result on the log: read up to it,
        # so that the assertions that follow see it on every transport.
        own.wait_for(lambda r: is_result(r) and result_correlation_id(r) == cid, wait)
        return result

    # -- records -----------------------------------------------------------------------------

    def records(self, id: str | None = None, *, type: str | None = None) -> list[Record]:
        """What was written on the app's key since the tester started (its own records,
        the commands it received and their results), oldest first; of one ID and/or TYPE if given."""
        return self._records().records(id, type=type)

    def values(self, id: str) -> list[Any]:
        """The values the app published for one ID since the start, in order."""
        return self._records().values(id)

    def last(self, id: str) -> Record | None:
        return self._records().last(id)

    def results(self, method: str | None = None) -> list[CommandResult]:
        """The app's answers since the start (commands, and HTTP calls of its method routes)."""
        return self._records().results(method)

    def assert_published(self, id: str, *, value: Any = ANY, type: str | None = None,
                         tag: str | None = None, timeout: float = 0.0) -> Record:
        """The app published ``id`` (with this value, TYPE, TAG) since the start or the last ``clear()``.

        ``value`` may be a predicate (``value=lambda v: v > 3``); ``timeout``
        waits for records written in the background (tasks, subscriptions).
        The failure lists everything written for ``id``.
        """
        return self._records().assert_published(id, value=value, type=type, tag=tag, timeout=timeout)

    def assert_not_published(self, id: str, *, value: Any = ANY, type: str | None = None,
                             tag: str | None = None) -> None:
        self._records().assert_not_published(id, value=value, type=type, tag=tag)

    def clear(self) -> None:
        """Forget what was recorded so far (the app's and followed assets' records)."""
        for records in [self._records(), *self._followed]:
            records.clear()

    def follow(self, asset_uuid: str) -> AssetRecords:
        """Record another asset's key from now on (closed when the tester stops).

        ``machine = ofa.follow("MACHINE-1")`` then ``machine.commands("home")``:
        the commands the app sent it.
        """
        self._records()
        records = AssetRecords(self.runtime.transport, asset_uuid)
        self._followed.append(records)
        return records

    # -- subscriptions -----------------------------------------------------------------------

    def feed(self, asset_uuid: str, attr_id: str, value: Any, *, type: str = SAMPLES,
             tag: str | None = None, timeout: float | None = None) -> Record:
        """Publish another asset's attribute update on the app's transport, as that asset would.

        Once started, waits until every subscription has handled it (and
        whatever else the log holds); before the start, it pre-loads that
        asset's current state, which subscriptions receive when they start.
        ``tag`` defaults to ``Normal`` for a Condition, else empty.
        """
        return self.feed_many(asset_uuid, [(attr_id, value)], type=type, tag=tag, timeout=timeout)[0]

    def feed_many(self, asset_uuid: str, values: Mapping[str, Any] | Iterable[tuple[str, Any]], *,
                  type: str = SAMPLES, tag: str | None = None, timeout: float | None = None) -> list[Record]:
        """Several updates of one asset (in order), then one wait for the subscriptions."""
        items = list(values.items() if isinstance(values, Mapping) else values)
        transport = self.runtime.transport
        if tag is None:
            tag = "Normal" if type == CONDITION else ""
        records = [Record.create(asset_uuid, attr_id, value, type=type, tag=tag) for attr_id, value in items]
        for record in records:
            transport.publish(record)
        wait = self.timeout if timeout is None else timeout
        transport.flush(wait)
        if self._own is not None:
            self.settle(wait, what=", ".join(f"{asset_uuid}/{r.id}={r.value!r}" for r in records))
        return records

    def settle(self, timeout: float | None = None, *, what: str = "the log") -> None:
        """Wait until every subscription of the app has handled what the log holds now."""
        self._records()
        self._settle(self.timeout if timeout is None else timeout, what)

    def _settle(self, timeout: float, what: str, *, startable: bool = False) -> None:
        deadline = time.monotonic() + timeout
        missing = self._wait_for_subscriptions(timeout, startable=startable)
        if missing:
            raise AssertionError(
                f"subscription(s) {', '.join(missing)} of asset {self.asset_uuid!r} are not running in "
                f"this process after {timeout:g}s: it does not execute commands "
                "(OPENFACTORY_EXECUTE_COMMANDS), another runtime of the same asset on this transport "
                "owns its command log, or the subscription could not start (see the log)"
            )
        if not self.runtime.subscriptions_settled(max(0.0, deadline - time.monotonic())):
            raise AssertionError(f"the subscriptions of asset {self.asset_uuid!r} did not finish handling "
                                 f"{what} within {timeout:g}s (a handler still running, or blocked?)")
        self.runtime.transport.flush(max(0.0, deadline - time.monotonic()))  # what the handlers wrote
        self._records().refresh()

    def _wait_for_subscriptions(self, timeout: float, *, startable: bool = False) -> list[str]:
        """Names of the declared subscriptions not running here after waiting up to ``timeout``.

        ``startable``: only those this process can run (all of them, unless it
        does not execute commands: then only ``every_worker`` ones).
        """
        executes = self.runtime.settings.execute_commands
        expected = {name for name, spec in self.runtime.subscriptions.items()
                    if not startable or spec.every_worker or executes}
        deadline = time.monotonic() + timeout
        while True:
            missing = sorted(expected - set(self.runtime.running_subscriptions()))
            if not missing or time.monotonic() >= deadline:
                return missing
            time.sleep(0.01)

    def __repr__(self) -> str:
        state = "started" if self._own is not None else "not started"
        return f"OpenFactoryTester({self.asset_uuid!r}, {state})"
