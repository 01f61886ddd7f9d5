"""Other assets, as this app sees them: their state, their methods, calling them.

``current_openfactory.asset("<uuid>")`` reads a snapshot (through ksqlDB on a
platform, from the log's state on sqlite and memory) and sends commands exactly
as any asset would: ``<method>_CMD`` on the target, answered by ``_RESULT``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ..transports import Transport
from ..wire.answering import answers_with_results
from ..wire.commands import NO_RESULT, CommandResult
from ..wire.protocol import CONDITION, EVENTS, METHOD, SAMPLES, JSONScalar, Record, validate_identifier
from ..wire.references import Direction, added_reference, parse_references, references_id
from .package_meta import package_meta
from .uns import resolve_uns


class _Options(Protocol):
    @property
    def ksqldb_url(self) -> str | None: ...


class _Settings(Protocol):
    @property
    def transport_options(self) -> _Options: ...


class AssetsHost(Protocol):
    """What a view of another asset needs from this app's runtime (``AssetRuntime`` is one)."""

    @property
    def asset_uuid(self) -> str: ...

    @property
    def settings(self) -> _Settings: ...

    @property
    def transport(self) -> Transport: ...

    def send_command(
        self,
        target_uuid: str,
        method: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        wait: float | None = None,
        sender_uuid: str | None = None,
    ) -> tuple[str, CommandResult | None]: ...


class RemoteAsset:
    def __init__(self, runtime: AssetsHost, asset_uuid: str, *, uns_id: str | None = None) -> None:
        self.asset_uuid = validate_identifier("asset UUID", asset_uuid)
        self.uns_id = uns_id
        self._runtime = runtime
        self._records: dict[str, Record] | None = None

    @classmethod
    def by_uns(cls, runtime: AssetsHost, uns_id: str) -> RemoteAsset:
        """The asset that ``uns_id`` maps to (ksqlDB's asset_to_uns_map); ``refresh`` re-resolves it."""
        return cls(runtime, resolve_uns(runtime.settings.transport_options.ksqldb_url, uns_id), uns_id=uns_id)

    def refresh(self) -> RemoteAsset:
        """Read the snapshot again (it is read once, on first use); an asset addressed by
        UNS id is looked up again first, as the platform may have moved the id."""
        if self.uns_id is not None:
            self.asset_uuid = validate_identifier(
                "asset UUID", resolve_uns(self._runtime.settings.transport_options.ksqldb_url, self.uns_id))
        self._records = self._runtime.transport.snapshot(self.asset_uuid)
        return self

    @property
    def records(self) -> dict[str, Record]:
        """Current attributes (method advertisements excluded), by ID."""
        if self._records is None:
            self.refresh()
        assert self._records is not None
        return {rid: r for rid, r in self._records.items() if r.type != METHOD}

    def attributes(self) -> dict[str, JSONScalar]:
        return {rid: record.value for rid, record in self.records.items()}

    def __getitem__(self, attr_id: str) -> JSONScalar:
        try:
            return self.records[attr_id].value
        except KeyError:
            raise KeyError(f"asset {self.asset_uuid!r} has no attribute {attr_id!r}") from None

    def asset_type(self) -> str | None:
        """The asset's ``AssetType`` (``OpenFactoryApp``, ``Device``, ...); None when it has none."""
        record = self.records.get("AssetType")
        return None if record is None or record.value is None else str(record.value)

    def samples(self) -> list[dict[str, Any]]:
        """``[{"ID", "VALUE", "TAG"}]`` of its Samples, as the reference's ``samples()``."""
        return self._of_type(SAMPLES)

    def events(self) -> list[dict[str, Any]]:
        return self._of_type(EVENTS)

    def conditions(self) -> list[dict[str, Any]]:
        return self._of_type(CONDITION)

    def _of_type(self, kind: str) -> list[dict[str, Any]]:
        return [{"ID": r.id, "VALUE": r.value, "TAG": re.sub(r"\{.*?\}", "", r.tag)}
                for r in self.records.values() if r.type == kind]

    def methods(self) -> dict[str, Any]:
        """Advertised method contracts by name (decoded from their JSON strings)."""
        found: dict[str, Any] = {}
        for name, value in self._runtime.transport.methods(self.asset_uuid).items():
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except (ValueError, RecursionError):
                    pass
            found[name] = value
        return found

    def wait_until(self, attribute: str, expected: Any, timeout: float = 30.0) -> bool:
        """True once ``attribute`` equals ``expected`` (or ``expected(value)`` is true), False
        after ``timeout`` seconds. The asset's log is followed from before its current state
        is read, so a change in between is not missed; an attribute the asset does not
        have yet is waited for (the reference raises)."""
        check: Callable[[Any], bool] = expected if callable(expected) else (lambda v: _same_value(v, expected))
        deadline = time.monotonic() + timeout
        follower = self._runtime.transport.follow(self.asset_uuid)
        try:
            current = self.refresh().records.get(attribute)
            if current is not None and check(current.value):
                return True
            while (remaining := deadline - time.monotonic()) > 0:
                for record in follower.poll(min(remaining, 0.5)):
                    if record.id == attribute:
                        assert self._records is not None
                        self._records[attribute] = record
                        if check(record.value):
                            return True
            return False
        finally:
            follower.close()

    def references_above(self) -> list[str]:
        """UUIDs of the assets above this one in the platform's asset graph."""
        return self._references("above")

    def references_below(self) -> list[str]:
        """UUIDs of the assets below this one in the platform's asset graph."""
        return self._references("below")

    def _references(self, direction: Direction) -> list[str]:
        record = self.refresh().records.get(references_id(direction))
        return parse_references(record.value if record is not None else None)

    def add_reference_above(self, asset_uuid: str, *, timeout: float = 10.0) -> None:
        """Put ``asset_uuid`` first in ``references_above``, as the reference does (no duplicate)."""
        self._add_reference("above", asset_uuid, timeout)

    def add_reference_below(self, asset_uuid: str, *, timeout: float = 10.0) -> None:
        """Put ``asset_uuid`` first in ``references_below``, as the reference does (no duplicate)."""
        self._add_reference("below", asset_uuid, timeout)

    def _add_reference(self, direction: Direction, new: str, timeout: float) -> None:
        current = self.refresh().records.get(references_id(direction))
        record = added_reference(self.asset_uuid, direction, current.value if current else None, new)
        if record is None:
            return
        transport = self._runtime.transport
        transport.publish(record)
        if transport.flush(timeout):  # the graph changed only once it is durable
            raise TimeoutError(f"{record.id} of {self.asset_uuid!r} was not delivered within {timeout:g}s")
        assert self._records is not None
        self._records[record.id] = record

    def answers_results(self) -> bool | None:
        """Whether this asset answers commands with ``_RESULT`` (None: nothing known of it)."""
        return answers_with_results(self.refresh().records, self.methods(),
                                    library_manufacturer=package_meta()[1])

    def call(
        self, method: str, *, wait: float | None = 10.0, **arguments: Any
    ) -> CommandResult | str:
        """Send ``<method>_CMD``; with ``wait``, return its result (TimeoutError if none came).

        With ``wait=None`` return the correlation id at once. To an asset that
        writes no results (a reference app), return as soon as the command is
        durable, with status ``SENT_NO_RESULT`` ("sent; this asset does not
        answer with results"), instead of waiting for a timeout.
        """
        if wait is not None and self.answers_results() is False:
            cid, _ = self._runtime.send_command(self.asset_uuid, method, arguments)
            if self._runtime.transport.flush(wait):  # sent means durable, not queued
                raise TimeoutError(f"{method}_CMD to {self.asset_uuid!r} was not delivered within {wait:g}s "
                                   f"(correlation id {cid})")
            return CommandResult(method, cid, self._runtime.asset_uuid, NO_RESULT)
        cid, result = self._runtime.send_command(self.asset_uuid, method, arguments, wait=wait)
        if wait is None:
            return cid
        if result is None:
            raise TimeoutError(
                f"no {method}_RESULT from asset {self.asset_uuid!r} within {wait:g}s "
                f"(correlation id {cid}); the command stays in the log and may still run"
            )
        return result

    def __repr__(self) -> str:
        return f"RemoteAsset({self.asset_uuid!r})"


def _same_value(value: Any, expected: Any) -> bool:
    """Equal, also when ksqlDB handed the value back as text (``"5"`` for 5, ``"true"`` for True)."""
    if value == expected:
        return True
    return isinstance(value, str) and not isinstance(expected, str) and value == json.dumps(expected)
