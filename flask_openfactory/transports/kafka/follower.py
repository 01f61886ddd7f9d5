"""Following an asset's new records: every process tails the asset's partition.

Assign only, no consumer group, from the end as it is when following starts
(or from an earlier follower's position, when one is reopened after a fault);
records of other assets sharing the partition are dropped by key, and those
this process wrote itself may be skipped (already applied): by their bytes
while the producer's set still holds them, else by their origin header. A
copy with the very same bytes from elsewhere (value, ID, tag, type and
millisecond alike) is skipped too: this process already applied that record,
and only its order among records of the same millisecond could differ. A
partition that now ends before the followed position was recreated or
truncated: it is read again from its beginning. The follower that skips this
process's writes is the process's own; it also feeds the command reader of
this process (``tap.py``).
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import OFFSET_END, KafkaException, TopicPartition

from ...wire.protocol import Record, RecordError
from ..base import Follower, LogEntry
from .client import KafkaClient
from .messages import ORIGIN_HEADER, Consumed, GapGuard, entry_of_another_asset, fetch, header_in, written_as_attribute
from .tap import CommandTap
from .watch import EndWatch

log = logging.getLogger("flask_openfactory.kafka")


class KafkaFollower(Follower):
    """Tails our partition from its end (assign, no group), keeping our key only."""

    def __init__(
        self, transport: KafkaClient, asset_uuid: str, *, skip_own_writes: bool = False,
        resume: Follower | None = None,
    ) -> None:
        self._asset_uuid = asset_uuid
        self._key = asset_uuid.encode("utf-8")
        self._anchored: bool  # a position known from a read offset or the resolved end, not OFFSET_END
        self._origin = transport.origin if skip_own_writes else None
        self._transport = transport
        self._closed = False
        self._consumer = transport._consumer()
        tp = TopicPartition(transport.topic, transport.partition_of(asset_uuid))
        # Resolve "the end" now: OFFSET_END is resolved at the first fetch, which
        # could be after a result we are about to wait for.
        _, high = self._consumer.get_watermark_offsets(tp, timeout=10.0, cached=False)
        # Go on where an earlier follower stopped, if it knew where (an unanchored one did not);
        # a position beyond the end (truncated, recreated) is caught by ``_check_end``.
        if isinstance(resume, KafkaFollower) and resume._anchored and high >= 0:
            high = resume.position
        self._consumer.assign([TopicPartition(tp.topic, tp.partition, high if high >= 0 else OFFSET_END)])
        self._tp, self._position = tp, max(high, 0)
        self._anchored = high >= 0
        self._end_watch = EndWatch(lambda: transport.end_offset(tp.partition))
        self._gaps = GapGuard()
        self._tap: CommandTap | None = None
        self._tap_lock = threading.Lock()  # a tap opens between two batches, never inside one
        self._written: set[bytes] | None = None  # this process's attribute writes, not read back yet
        if skip_own_writes:
            self._written = transport.track_written()
            transport.offer_tap(self._key, self.open_tap)

    def open_tap(self) -> CommandTap | None:
        """Hand this process's command reader every later batch (see ``tap.py``); None while the
        follower has no position of its own yet (nothing would say where the tap starts)."""
        with self._tap_lock:
            if self._closed or not self._anchored:
                return None
            if self._tap is not None:
                self._tap.close()
            self._tap = CommandTap(self._position)
            return self._tap

    @property
    def position(self) -> int:
        return self._position

    def poll(self, timeout: float) -> list[Record]:
        if self._closed:
            return []
        messages = fetch(self._consumer, timeout)
        with self._tap_lock:
            records, idle = self._take(messages)
        if idle:  # error events aside
            self._check_end()
        return records

    def _take(self, messages: list[Consumed]) -> tuple[list[Record], bool]:
        records: list[Record] = []
        key, origin, tap, written = self._key, self._origin, self._tap, self._written
        ours = None if origin is None else (ORIGIN_HEADER, origin)  # our producer writes it last
        kept: list[LogEntry] = []  # what the command reader keeps, while a tap is open
        position = None
        expected = self._position if self._anchored else -1  # OFFSET_END: no position to check yet
        # Every record this process writes comes back here: recognise it with as few calls as possible.
        for message in messages:
            if message.error() is not None:
                continue
            offset = message.offset()
            if (offset > expected or self._gaps.pending) and self._gaps.read_again(
                    self._consumer, self._tp, expected, offset, what=f"the log of {key.decode()}",
                    stats=self._transport._stats):
                break  # the rest of this batch comes again after the missing offsets
            position, expected = offset, offset + 1
            if message.key() != key:
                if tap is not None:
                    kept.append(entry_of_another_asset(offset, message.key()))
                continue
            value = message.value()
            attribute = False
            if ours is not None:
                if written is not None and value in written:  # the same bytes as one of this process's
                    written.discard(value)  # writes: applied when written (whoever wrote this copy)
                    continue
                headers = message.headers()
                if headers:
                    if headers[-1] == ours or header_in(headers, ORIGIN_HEADER) == origin:
                        continue  # written by this process, already applied
                    attribute = written_as_attribute(headers)
            try:
                record = Record.from_wire(key, value)
            except RecordError as exc:
                if tap is not None and not attribute:
                    kept.append(LogEntry(offset, self._asset_uuid, None, str(exc)))
                continue
            records.append(record)
            if tap is not None and not attribute:
                kept.append(LogEntry(offset, self._asset_uuid, record))
        if position is not None:
            self._position, self._anchored = position + 1, True
        if tap is not None:
            tap.feed(kept, self._position)
        return records, position is None

    def _check_end(self) -> None:
        """Following a recreated topic: its partition holds only records written since, so
        all of them are read (from its beginning), not only those after an old position."""
        end = self._end_watch.beyond(self._consumer, self._tp, self._position)
        if end is None:
            return
        try:
            low, _ = self._consumer.get_watermark_offsets(self._tp, timeout=2.0, cached=False)
        except KafkaException:
            low = 0  # a recreated partition starts at 0
        log.error("topic %r partition %d ends at offset %d, before the followed position %d: recreated or "
                  "truncated; following it from offset %d", self._tp.topic, self._tp.partition, end,
                  self._position, max(low, 0))
        with self._tap_lock:
            self._drop_tap()  # the command reader has a rule of its own for a recreated log
            self._consumer.seek(TopicPartition(self._tp.topic, self._tp.partition, max(low, 0)))
            self._position = max(low, 0)
        self._transport.log_reset(f"topic {self._tp.topic!r} partition {self._tp.partition}")

    def _drop_tap(self) -> None:
        if self._tap is not None:
            self._tap.close()
            self._tap = None

    def close(self) -> None:
        if not self._closed:
            with self._tap_lock:
                self._closed = True
                self._drop_tap()
            self._transport.withdraw_tap(self._key, self.open_tap)
            if self._written is not None:
                self._transport.untrack_written(self._written)
            self._consumer.close()

