"""Reading the asset's commands (or, for a subscription, all its updates) as its one reader.

The partition holding the asset's key is read from the offset committed under
the asset's consumer group; the first owner ever starts at the end and commits
it. Offsets are committed explicitly by the runtime once a command's result is
delivered (at least once). A position beyond the partition's end (the topic
was recreated or truncated) resumes from the end as it is now. Who may read,
the election, is the subclasses' part (``election.py``). A command reader
that may (``TAPS``) opens a tap on this process's follower as soon as it owns
the log, reads up to where the tap starts by itself, then takes its entries
from the follower and pauses its own consumer (``tap.py``).
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from ...wire.protocol import Record, RecordError
from ..base import CommandReader, LogEntry, TransportError
from .client import KafkaClient
from .config import CONNECTION_CODES
from .messages import FETCH_LIMIT, GapGuard, entry_of_another_asset, fetch, written_as_attribute
from .tap import CommandTap
from .watch import EndWatch

log = logging.getLogger("flask_openfactory.kafka")


class PartitionReader(CommandReader):
    """Reads our one partition from the committed position; subclasses decide ownership."""

    TAPS = False  # may read from this process's follower while it owns the log (``tap.py``)

    def __init__(self, transport: KafkaClient, asset_uuid: str, group: str, *, attributes: bool = False) -> None:
        self._transport = transport
        self._attributes = attributes  # a subscription reads the attribute writes a command reader skips
        self._key = asset_uuid
        self._key_bytes = asset_uuid.encode("utf-8")
        self._group = group
        self._topic = transport.topic
        self._partition = transport.partition_of(asset_uuid)
        self._generation = 0
        self._owns = False
        self._closed = False
        self._position = -1
        self._committed = -1
        self._last_batch = 0
        self.received: dict[int, int] = {}  # records fetched per partition, for tests and status
        self._consumer: Consumer | None = None
        self._written: set[bytes] | None = None  # this process's attribute writes, while reading as owner
        self._end_watch = EndWatch(lambda: self._transport.end_offset(self._partition))
        self._gaps = GapGuard()
        self._may_tap = False  # owner, and no log reset since (after one: once caught up again)
        self._tap: CommandTap | None = None  # opened on the follower; read from once reached
        self._tapped = False  # reading from the tap, the own consumer paused

    @property
    def owns(self) -> bool:
        return self._owns and not self._closed

    @property
    def generation(self) -> int:
        return self._generation

    def stats(self) -> dict[str, Any]:
        """Our partition and what was fetched from each: whether it reads only its own; the next
        offset to read in ours (fetched or taken from the tap); whether the follower feeds it now."""
        return {"partition": self._partition, "received": dict(self.received), "position": self._position,
                "tapped": self._tapped}

    def _start_position(self, consumer: Consumer) -> int:
        """The committed offset; the first owner ever starts at the end and commits it."""
        tp = TopicPartition(self._topic, self._partition)
        committed = consumer.committed([tp], timeout=10.0)[0].offset
        if committed < 0:
            committed = self._transport.end_offset(self._partition)
            consumer.commit(offsets=[TopicPartition(self._topic, self._partition, committed)], asynchronous=False)
        self._position = self._committed = committed
        self._owns = True
        self._leave_tap()
        # The tap opens at the first read, at the follower's position: this reader reads up to it by
        # itself (the recovery), then from it. Opened only once caught up, under a stream of writes
        # it started where the follower had got to by then, and the reader fetched all that too.
        self._may_tap = self.TAPS and not self._attributes
        self._track_writes(True)
        self._generation += 1
        self._catch_up_to = None
        # the runtime says "executing commands here" itself: the position is a detail
        log.log(logging.INFO if self._attributes else logging.DEBUG,
                "this process now %s %s (partition %d from offset %d)",
                "follows updates of" if self._attributes else "executes commands of",
                self._key, self._partition, committed)
        return committed

    def _track_writes(self, owning: bool) -> None:
        """While it reads by itself as owner, a command reader is told the bytes of this process's
        attribute writes; otherwise nothing is kept for it."""
        if self._attributes:
            return
        if owning:
            if self._written is None:
                self._written = self._transport.track_written()
            return
        if self._written is not None:
            self._transport.untrack_written(self._written)
        self._written = None

    def _read(self, timeout: float) -> list[LogEntry]:
        assert self._consumer is not None
        if self._tapped:
            return self._read_tap(timeout)
        entries = self._fetch(timeout)
        if self._may_tap and self._owns:
            self._reach_tap()
        return entries

    def _reach_tap(self) -> None:
        """Open a tap on the follower, and read from it once this reader has read up to where it
        starts (until then the tap keeps what comes, and this reader's own reads overlap it)."""
        tap = self._tap
        if tap is None or tap.closed:
            tap = self._tap = self._transport.open_tap(self._key_bytes)
            if tap is None:
                return
        if self._position >= tap.start and not self._gaps.pending:
            assert self._consumer is not None
            self._consumer.pause([TopicPartition(self._topic, self._partition)])
            self._tapped = True
            self._track_writes(False)  # attribute writes no longer come here
            log.debug("command reader of %s reads from this process's follower from offset %d",
                      self._key, self._position)

    def _read_tap(self, timeout: float) -> list[LogEntry]:
        assert self._consumer is not None and self._tap is not None
        for message in self._consumer.consume(FETCH_LIMIT, 0):  # errors; a fetch before the pause
            error = message.error()
            if error is not None and error.fatal():
                raise TransportError(f"Kafka consumer failed: {error.str()}")
        taken = self._tap.take(timeout) if self._owns else None
        if taken is None:  # the follower went away or this reader fell behind: read by itself again
            self._leave_tap()
            return []
        entries, covered = taken
        position = self._position
        if entries and entries[0].offset < position:
            entries = [entry for entry in entries if entry.offset >= position]
        self._position = max(position, covered)
        self._last_batch = 0
        return entries

    def _leave_tap(self) -> None:
        """Read with this reader's own consumer again, from its position."""
        tap, self._tap = self._tap, None
        if tap is not None:
            tap.close()
        if not self._tapped:
            return
        self._tapped = False
        self._gaps = GapGuard()
        if self._consumer is not None:
            tp = TopicPartition(self._topic, self._partition, self._position)
            self._consumer.resume([TopicPartition(self._topic, self._partition)])
            self._consumer.seek(tp)
        if self._owns:
            self._track_writes(True)
        log.debug("command reader of %s reads by itself again from offset %d", self._key, self._position)

    def _fetch(self, timeout: float) -> list[LogEntry]:
        assert self._consumer is not None
        entries = []
        messages = fetch(self._consumer, timeout)
        received = self.received
        idle = True
        # Every record of the partition comes here, most of them attribute writes: skip those with few calls.
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise TransportError(f"Kafka consumer failed: {error.str()}")
                if error.code() in CONNECTION_CODES:
                    self._transport.quiet.connection_error(error.str())
                elif error.code() != KafkaError._PARTITION_EOF:
                    log.warning("Kafka consumer: %s", error.str())
                continue
            idle = False
            partition = message.partition()
            received[partition] = received.get(partition, 0) + 1
            if not self._owns or partition != self._partition:
                continue
            offset = message.offset()
            if offset < self._position:  # the client reset itself (offset out of range)
                self._reset(offset, f"went back to offset {offset}")
            elif (offset > self._position or self._gaps.pending) and self._gaps.read_again(
                    self._consumer, TopicPartition(self._topic, self._partition), self._position, offset,
                    what=f"the command log of {self._key}", stats=self._transport._stats):
                break  # the rest of this batch comes again after the missing offsets
            self._position = offset + 1
            raw_key = message.key()
            if raw_key != self._key_bytes:  # another asset's record: count it, never decode it
                entries.append(entry_of_another_asset(offset, raw_key))
                continue
            if not self._attributes:
                written = self._written
                if written is not None:
                    value = message.value()
                    if value in written:  # bytes this process wrote as an attribute record
                        written.discard(value)
                        continue
                headers = message.headers()
                if headers and written_as_attribute(headers):
                    continue  # an attribute write: neither a command nor a result
            try:
                entries.append(LogEntry(offset, self._key, Record.from_wire(raw_key, message.value())))
            except RecordError as exc:
                entries.append(LogEntry(offset, self._key, None, str(exc)))
        self._last_batch = len(messages)
        if self._owns and idle:  # error events aside
            self._check_end()
        return entries

    def _check_end(self) -> None:
        """A committed or read position beyond the partition's end (topic recreated or truncated).

        The documented rule: resume from the partition's end as it is now, and
        commit it; what lies before was either answered already or belongs to
        a log that no longer exists, so nothing is run again. The generation
        moves on, so that the runtime forgets the positions of the old log.
        """
        assert self._consumer is not None
        tp = TopicPartition(self._topic, self._partition)
        end = self._end_watch.beyond(self._consumer, tp, self._position)
        if end is not None:
            self._reset(end, f"ends at offset {end}")
            self._consumer.seek(TopicPartition(self._topic, self._partition, end))

    def _reset(self, offset: int, what: str) -> None:
        """Continue from ``offset`` of a log that is not the one the old positions counted in."""
        assert self._consumer is not None
        self._may_tap = False
        log.error("the %s log of %s (topic %r partition %d) %s, before this reader's position %d: the topic "
                  "was recreated or truncated; resuming from offset %d, nothing before it is run",
                  "update" if self._attributes else "command", self._key, self._topic, self._partition, what,
                  self._position, offset)
        self._transport._stats["position_resets"] += 1
        self._transport.log_reset(f"topic {self._topic!r} partition {self._partition}")
        self._consumer.commit(offsets=[TopicPartition(self._topic, self._partition, offset)], asynchronous=False)
        self._position = self._committed = offset
        self._generation += 1
        self._catch_up_to = None

    def caught_up(self) -> bool:
        """This reader has read the log up to the end a call found it behind (``CommandReader``).

        Not "the last fetch was empty", nor "nothing lies past the position now": while
        anything writes to the partition (other assets, this process's attribute writes,
        a steady stream of commands) the end moves on between each fetch and each look at
        it, and a new owner never started executing. A reader that finds itself behind
        keeps the end it saw as its goal, and is caught up once it has read that far.
        """
        consumer = self._consumer
        if not self.owns or consumer is None:
            return False

        def end() -> int | None:
            if self._last_batch >= FETCH_LIMIT:  # a full batch: more is waiting, no need to ask
                return None
            return int(consumer.get_watermark_offsets(
                TopicPartition(self._topic, self._partition), timeout=5.0, cached=False)[1])

        if not self._reached(self._position, end):
            return False
        self._may_tap = self.TAPS and not self._attributes
        return True

    def commit(self, offset: int) -> None:
        if self.owns and self._consumer is not None and offset + 1 > self._committed:
            self._committed = offset + 1
            self._consumer.commit(
                offsets=[TopicPartition(self._topic, self._partition, offset + 1)], asynchronous=True)

    def _close_consumer(self) -> None:
        owned, self._owns = self._owns, False
        self._may_tap = False
        self._leave_tap()
        consumer, self._consumer = self._consumer, None
        self._track_writes(False)
        if consumer is None:
            return
        try:
            if owned and self._committed >= 0:  # async commits may still be in flight
                consumer.commit(
                    offsets=[TopicPartition(self._topic, self._partition, self._committed)], asynchronous=False)
        except KafkaException as exc:
            log.warning("final commit of %s failed: %s", self._key, exc)
        try:
            consumer.close()
        except RuntimeError:
            pass

