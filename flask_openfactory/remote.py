"""Other assets, as this app sees them: their state, their methods, calling them.

``current_openfactory.asset("<uuid>")`` reads a snapshot (through ksqlDB on a
platform, from the log's state on sqlite and memory) and sends commands exactly
as any asset would: ``<method>_CMD`` on the target, answered by ``_RESULT``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .answering import answers_with_results
from .commands import NO_RESULT, CommandResult
from .protocol import METHOD, JSONScalar, Record, validate_identifier

if TYPE_CHECKING:
    from .runtime import AssetRuntime


class RemoteAsset:
    def __init__(self, runtime: "AssetRuntime", asset_uuid: str) -> None:
        self.asset_uuid = validate_identifier("asset UUID", asset_uuid)
        self._runtime = runtime
        self._records: dict[str, Record] | None = None

    def refresh(self) -> "RemoteAsset":
        """Read the snapshot again (it is read once, on first use)."""
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

    def answers_results(self) -> bool | None:
        """Whether this asset answers commands with ``_RESULT`` (None: nothing known of it)."""
        from .runtime import _package_meta

        return answers_with_results(self.refresh().records, self.methods(),
                                    library_manufacturer=_package_meta()[1])

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
