"""A view of the records written on one asset's key, with the tester's assertions.

``OpenFactoryTester`` keeps one for its app and opens more with ``follow()``;
it reads a transport follower on demand, never in a thread of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..wire.commands import CommandResult, is_command, is_result
from ..wire.protocol import COMMAND_SUFFIX, RESULT_SUFFIX, Record
from .matching import ANY, describe, same, wanted

if TYPE_CHECKING:
    from ..transports.base import Follower, Transport

__all__ = ["AssetRecords"]


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
            return (record.id == id and same(value, record.value)
                    and (type is None or record.type == type) and (tag is None or record.tag == tag))

        found = [r for r in self.records(id) if matches(r)]
        if not found and timeout > 0 and self.wait_for(matches, timeout) is not None:
            found = [r for r in self.records(id) if matches(r)]
        if found:
            return found[-1]
        waited = f" within {timeout:g}s" if timeout > 0 else ""
        raise AssertionError(
            f"{id!r} was not published with {wanted(value, type, tag)} on asset {self.asset_uuid!r}{waited}.\n"
            + self._written_for(id)
        )

    def assert_not_published(
        self, id: str, *, value: Any = ANY, type: str | None = None, tag: str | None = None,
    ) -> None:
        """Nothing matching was written for ``id`` (since the start, or the last ``clear()``)."""
        bad = [r for r in self.records(id) if same(value, r.value)
               and (type is None or r.type == type) and (tag is None or r.tag == tag)]
        if bad:
            raise AssertionError(
                f"{id!r} was published with {wanted(value, type, tag)} on asset {self.asset_uuid!r}, "
                f"{len(bad)} time(s).\n" + self._written_for(id)
            )

    def _written_for(self, id: str) -> str:
        same = [r for r in self._records if r.id == id]
        if same:
            lines = "\n".join(f"  {describe(r)}" for r in same)
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
