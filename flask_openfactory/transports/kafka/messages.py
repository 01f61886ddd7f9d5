"""Consumed records as every reader of the partition takes them.

A batch fetch that returns as soon as one message arrives, the typed view of
a consumed message, and the header we put on the attribute records we write
(the value format is the contract's, untouched): our own readers skip those
records undecoded. The command reader needs only commands and results; a
follower already applied its own process's writes.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, cast

from confluent_kafka import Consumer, KafkaError, TopicPartition

from ..base import LogEntry

FETCH_LIMIT = 500  # records handed over per fetch

# Our producers mark each attribute write with one header, the writing process's origin: that
# marks it as an attribute write too (commands and results carry none). Earlier versions wrote
# two, ``ofa-kind: attribute`` first and the origin last; both are recognised.
ORIGIN_HEADER = "ofa-origin"
KIND_HEADER = "ofa-kind"
ATTRIBUTE_KIND = b"attribute"


class Consumed(Protocol):
    """A consumed ``Message`` as this package reads it (confluent-kafka types every getter Optional):
    one whose ``error()`` is None has its partition and offset, and headers as a list of pairs."""

    def error(self) -> KafkaError | None: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes | None]] | None: ...


def header_in(headers: list[tuple[str, bytes | None]], name: str) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def written_as_attribute(headers: list[tuple[str, bytes | None]]) -> bool:
    """An attribute write of one of our producers (a non-empty header list, as ``headers()`` gives it).

    Reading the headers costs more than the rest of a record's check (confluent-kafka builds the
    list anew at each call), so one list serves both questions, and one header is written.
    """
    name = headers[0][0]
    if name == ORIGIN_HEADER or (name == KIND_HEADER and headers[0][1] == ATTRIBUTE_KIND):
        return True
    return header_in(headers, ORIGIN_HEADER) is not None or header_in(headers, KIND_HEADER) == ATTRIBUTE_KIND


def entry_of_another_asset(offset: int, raw_key: bytes | None) -> LogEntry:
    """A record of another asset sharing the partition: counted and passed, never decoded."""
    try:
        key = raw_key.decode("utf-8") if raw_key is not None else None
    except UnicodeDecodeError:
        key = None
    return LogEntry(offset, key, None, "record of another asset")


def fetch(consumer: Consumer, timeout: float, limit: int = FETCH_LIMIT) -> list[Consumed]:
    """Return as soon as one message arrives, plus whatever is already buffered.

    ``consume(n, timeout)`` waits for all ``n`` or the whole timeout, which would
    put the timeout into every command's round trip.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    return cast("list[Consumed]", [first, *consumer.consume(limit - 1, 0)])


class GapGuard:
    """Reads a partition again from the first offset a fetch jumped over, until the gap fills.

    A fetch that starts past the position it was asked for (offsets 410 and 411 not
    returned, 412 next) loses records unless the gap is real. The test broker does this
    under concurrent writers: it serves a batch before an earlier one is readable, and the
    earlier one comes 10 to 25 ms later (a command never ran; a test's observer missed
    results). A real Kafka broker leaves gaps only where compaction or transaction markers removed
    offsets, which the platform's topic has neither of; such a gap skips again on every
    read and is accepted after ``TRIES`` reads, so it costs that many extra fetches.
    """

    TRIES = 3

    def __init__(self) -> None:
        self._at = -1  # the position being read again
        self._to = -1  # the offset its first read jumped to
        self._tries = 0

    @property
    def pending(self) -> bool:
        """A gap is being read again. Hot loops call ``read_again`` only for an offset past the
        position or while this is true; every other record needs nothing from the guard."""
        return self._at >= 0

    def step(self, position: int, offset: int) -> str | None:
        """What ``offset`` read at ``position`` calls for: ``"read again"``, ``"filled"`` (a gap read
        again came back whole), ``"accepted"`` (a real gap) or None (in order, or no position yet)."""
        if self._at >= 0 and offset <= position:
            filled = offset == position == self._at
            if filled or position != self._at:
                self._at = -1
            return "filled" if filled else None
        if offset <= position or position < 0:
            return None
        if self._at != position:
            self._at, self._to, self._tries = position, offset, 0
        if self._tries >= self.TRIES:
            self._at = -1
            return "accepted"
        self._tries += 1
        return "read again"

    def read_again(self, consumer: Consumer, tp: TopicPartition, position: int, offset: int, *,
                   what: str, stats: dict[str, Any]) -> bool:
        """True when the caller must drop the rest of its batch: seeked back to ``position``."""
        action = self.step(position, offset) if self._at >= 0 or offset > position else None
        if action is None:
            return False
        log = logging.getLogger("flask_openfactory.kafka")
        where = f"{what} (topic {tp.topic!r} partition {tp.partition})"
        if action == "filled":
            last = self._to - 1
            log.warning("%s: %s returned only when read again (the broker served later records first); "
                        "nothing was skipped", where,
                        f"offset {position} was" if last == position else f"offsets {position} to {last} were")
            stats["gaps_read_again"] += 1
            return False
        if action == "accepted":
            log.info("%s: %s missing after %d reads: a gap in the log, continuing at %d", where,
                     f"offset {position} is" if offset - 1 == position else f"offsets {position} to {offset - 1} are",
                     self.TRIES + 1, offset)
            stats["gaps_accepted"] += 1
            return False
        log.debug("%s jumped from offset %d to %d; reading it again", where, position, offset)
        consumer.seek(TopicPartition(tp.topic, tp.partition, position))
        return True
