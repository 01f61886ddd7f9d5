"""Following an asset's new records: every process tails the asset's partition.

Assign only, no consumer group, from the end as it is when following starts
(or from an earlier follower's position, when one is reopened after a fault);
records of other assets sharing the partition are dropped by key, and those
this process wrote itself may be skipped (already applied). A partition that
now ends before the followed position was recreated or truncated: it is read
again from its beginning.
"""

from __future__ import annotations

import logging

from confluent_kafka import OFFSET_END, KafkaException, TopicPartition

from ...wire.protocol import Record, RecordError
from ..base import Follower
from .client import KafkaClient
from .messages import ORIGIN_HEADER, GapGuard, fetch, header_in
from .watch import EndWatch

log = logging.getLogger("flask_openfactory.kafka")


class KafkaFollower(Follower):
    """Tails our partition from its end (assign, no group), keeping our key only."""

    def __init__(
        self, transport: KafkaClient, asset_uuid: str, *, skip_own_writes: bool = False,
        resume: Follower | None = None,
    ) -> None:
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

    @property
    def position(self) -> int:
        return self._position

    def poll(self, timeout: float) -> list[Record]:
        if self._closed:
            return []
        records = []
        key, origin = self._key, self._origin
        ours = None if origin is None else (ORIGIN_HEADER, origin)  # our producer writes it last
        position = None
        expected = self._position if self._anchored else -1  # OFFSET_END: no position to check yet
        # Every record this process writes comes back here: recognise it with as few calls as possible.
        for message in fetch(self._consumer, timeout):
            if message.error() is not None:
                continue
            offset = message.offset()
            if (offset > expected or self._gaps.pending) and self._gaps.read_again(
                    self._consumer, self._tp, expected, offset, what=f"the log of {key.decode()}",
                    stats=self._transport._stats):
                break  # the rest of this batch comes again after the missing offsets
            position, expected = offset, offset + 1
            if message.key() != key:
                continue
            if ours is not None:
                headers = message.headers()
                if headers and (headers[-1] == ours or header_in(headers, ORIGIN_HEADER) == origin):
                    continue  # written by this process, already applied
            try:
                records.append(Record.from_wire(key, message.value()))
            except RecordError:
                continue
        if position is None:  # idle (error events aside)
            self._check_end()
        else:
            self._position, self._anchored = position + 1, True
        return records

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
        self._consumer.seek(TopicPartition(self._tp.topic, self._tp.partition, max(low, 0)))
        self._position = max(low, 0)
        self._transport.log_reset(f"topic {self._tp.topic!r} partition {self._tp.partition}")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._consumer.close()

