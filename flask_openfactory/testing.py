"""Testing an app the way the platform uses it: commands, published records, subscriptions.

``OpenFactoryTester`` starts an app's asset runtime, calls its methods as
another asset would (a ``<method>_CMD`` record on the app's log, executed by
the real dispatcher, answered by ``<method>_RESULT``), records everything
published on the app's key from the moment it started, and feeds other
assets' attribute updates into the app's subscriptions, waiting until they
were handled::

    from flask_openfactory.testing import OpenFactoryTester

    with OpenFactoryTester(create_app("testing")) as ofa:
        result = ofa.call("move_axis", x=10, y=20)
        assert result.status == "OK"
        ofa.assert_published("position_x", value=10.0)

The pytest plugin (``flask_openfactory.pytest_plugin``) gives the same object
as the ``ofa`` fixture. Made for the ``memory://`` transport (one process, the
testing config), it works on any transport: it only uses the runtime's
public operations and the transport's followers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .commands import CommandResult, is_command, is_result, result_correlation_id
from .protocol import COMMAND_SUFFIX, CONDITION, RESULT_SUFFIX, SAMPLES, Record

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient, FlaskCliRunner

    from .runtime import AssetRuntime
    from .transports.base import Follower, Transport

__all__ = ["AssetRecords", "NoResultError", "OpenFactoryTester", "runtime_of"]

DEFAULT_TIMEOUT = 5.0
DEFAULT_SENDER = "PYTEST"


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()  # "any value" in assertions (None is a value an attribute may have)


class NoResultError(AssertionError, TimeoutError):
    """A command got no ``_RESULT`` in time (an AssertionError, so pytest reports it as a failure)."""


def runtime_of(app: Flask) -> AssetRuntime:
    """The asset runtime of an app that called ``ofa.init_app(app)``."""
    state = app.extensions.get("openfactory")
    if state is None:
        raise RuntimeError(
            f"the Flask app {app.import_name!r} has no OpenFactory extension: "
            "call 'ofa.init_app(app)' in its factory"
        )
    return state.runtime  # type: ignore[no-any-return]  # app.extensions holds Any


def _same(expected: Any, actual: Any) -> bool:
    if expected is ANY:
        return True
    if callable(expected):
        return bool(expected(actual))
    if isinstance(expected, bool) or isinstance(actual, bool):  # True is not 1 on the wire
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    return bool(expected == actual)


def _describe(record: Record) -> str:
    return f"{record.value!r}  (type {record.type}, tag {record.tag!r}, at {record.timestamp})"


def _wanted(value: Any, type: str | None, tag: str | None) -> str:
    parts = [] if value is ANY else [f"value={value!r}"]
    if type is not None:
        parts.append(f"type={type!r}")
    if tag is not None:
        parts.append(f"tag={tag!r}")
    return ", ".join(parts) or "any value"


class AssetRecords:
    """The records written on one asset's key since this object was opened.

    Reads a transport follower on demand (never in a thread of its own): each
    query first takes what has arrived. The tester keeps one for its app
    (``ofa.records()``), and ``ofa.follow(uuid)`` opens one for another asset,
    for instance to see the commands an app sends it.
    """

    def __init__(self, transport: Transport, asset_uuid: str) -> None:
        self.asset_uuid = asset_uuid
        self._follower: Follower | None = transport.follow(asset_uuid)
        self._records: list[Record] = []

    # -- reading -------------------------------------------------------------------------

    def refresh(self, timeout: float = 0.0) -> list[Record]:
        """Take the records that arrived (waiting up to ``timeout`` for the first); return them."""
        if self._follower is None:
            return []
        new = list(self._follower.poll(timeout))
        while True:  # a follower may return part of what is there: drain it
            more = self._follower.poll(0.0)
            if not more:
                break
            new.extend(more)
        self._records.extend(new)
        return new

    def wait_for(self, predicate: Callable[[Record], bool], timeout: float) -> Record | None:
        """The first record (already read or arriving within ``timeout``) that matches."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            self.refresh()
            for record in self._records[seen:]:
                if predicate(record):
                    return record
            seen = len(self._records)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.refresh(min(remaining, 0.2))  # wait for more; the next round looks at them

    def records(self, id: str | None = None, *, type: str | None = None) -> list[Record]:
        """The records written on the key, in log order; only those of one ID and/or TYPE if given."""
        self.refresh()
        return [r for r in self._records if (id is None or r.id == id) and (type is None or r.type == type)]

    def values(self, id: str) -> list[Any]:
        """The values written for one ID, in order."""
        return [r.value for r in self.records(id)]

    def last(self, id: str) -> Record | None:
        """The latest record of one ID, or None."""
        found = self.records(id)
        return found[-1] if found else None

    def commands(self, method: str | None = None) -> list[Record]:
        """``<method>_CMD`` records written on the key (commands sent to this asset)."""
        return [r for r in self.records() if is_command(r)
                and (method is None or r.id == method + COMMAND_SUFFIX)]

    def results(self, method: str | None = None) -> list[CommandResult]:
        """The asset's answers (``<method>_RESULT``), decoded."""
        return [CommandResult.from_record(r) for r in self.records() if is_result(r)
                and (method is None or r.id == method + RESULT_SUFFIX)]

    def clear(self) -> None:
        """Forget what was read: later queries and assertions see only what comes next."""
        self.refresh()
        self._records.clear()

    # -- assertions ------------------------------------------------------------------------

    def assert_published(
        self, id: str, *, value: Any = ANY, type: str | None = None, tag: str | None = None,
        timeout: float = 0.0,
    ) -> Record:
        """The last record of ``id`` matching ``value`` (a value or a predicate), ``type`` and ``tag``.

        Waits up to ``timeout`` seconds for it (for what a background task or
        a subscription publishes); fails listing what was written for ``id``.
        """
        def matches(record: Record) -> bool:
            return (record.id == id and _same(value, record.value)
                    and (type is None or record.type == type) and (tag is None or record.tag == tag))

        found = [r for r in self.records(id) if matches(r)]
        if not found and timeout > 0 and self.wait_for(matches, timeout) is not None:
            found = [r for r in self.records(id) if matches(r)]
        if found:
            return found[-1]
        waited = f" within {timeout:g}s" if timeout > 0 else ""
        raise AssertionError(
            f"{id!r} was not published with {_wanted(value, type, tag)} on asset {self.asset_uuid!r}{waited}.\n"
            + self._written_for(id)
        )

    def assert_not_published(
        self, id: str, *, value: Any = ANY, type: str | None = None, tag: str | None = None,
    ) -> None:
        """Nothing matching was written for ``id`` (since the start, or the last ``clear()``)."""
        bad = [r for r in self.records(id) if _same(value, r.value)
               and (type is None or r.type == type) and (tag is None or r.tag == tag)]
        if bad:
            raise AssertionError(
                f"{id!r} was published with {_wanted(value, type, tag)} on asset {self.asset_uuid!r}, "
                f"{len(bad)} time(s).\n" + self._written_for(id)
            )

    def _written_for(self, id: str) -> str:
        same = [r for r in self._records if r.id == id]
        if same:
            lines = "\n".join(f"  {_describe(r)}" for r in same)
            return f"Written for {id!r} ({len(same)} record(s), oldest first):\n{lines}"
        ids = sorted({r.id for r in self._records})
        return (f"Nothing was written for {id!r}. IDs written: {', '.join(ids)}" if ids
                else f"Nothing at all was written on asset {self.asset_uuid!r}.")

    def close(self) -> None:
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.close()

    def __repr__(self) -> str:
        return f"AssetRecords({self.asset_uuid!r}, {len(self._records)} read)"


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
