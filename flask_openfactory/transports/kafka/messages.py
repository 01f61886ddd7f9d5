"""Consumed records as every reader of the partition takes them.

A batch fetch that returns as soon as one message arrives, the typed view of
a consumed message, and the headers we put on the attribute records we write
(the value format is the contract's, untouched): our own readers skip those
records undecoded. The command reader needs only commands and results; a
follower already applied its own process's writes.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, cast

from confluent_kafka import Consumer, KafkaError, TopicPartition

FETCH_LIMIT = 500  # records handed over per fetch

KIND_HEADER = "ofa-kind"
ORIGIN_HEADER = "ofa-origin"
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


def header(message: Consumed, name: str) -> bytes | None:
    headers = message.headers()
    return header_in(headers, name) if headers else None


def header_in(headers: list[tuple[str, bytes | None]], name: str) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


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
    """Reads a partition again from the first offset a fetch jumped over, once per gap.

    A fetch that starts past the position it was asked for (offsets 410 and 411 never
    returned, 412 next) loses records unless the gap is real. The test broker did this
    under concurrent writers (a command never ran). A real broker leaves gaps only where
    compaction or transaction markers removed offsets, and there the second read jumps the
    same way and is accepted, so each gap costs one extra fetch at most.
    """

    def __init__(self) -> None:
        self._tried = -1  # the position read again last

    def jumped(self, position: int, offset: int) -> bool:
        """True when ``offset`` skips past ``position`` and that gap was not read again yet."""
        if offset <= position or position < 0 or self._tried == position:
            return False
        self._tried = position
        return True

    def read_again(self, consumer: Consumer, tp: TopicPartition, position: int, offset: int, *,
                   what: str, stats: dict[str, Any]) -> bool:
        """On a jump not read again yet: say so, count it and seek back to ``position`` (True)."""
        if not self.jumped(position, offset):
            return False
        logging.getLogger("flask_openfactory.kafka").warning(
            "%s (topic %r partition %d) jumped from offset %d to %d; reading it again from %d",
            what, tp.topic, tp.partition, position, offset, position)
        stats["gaps_read_again"] += 1
        consumer.seek(TopicPartition(tp.topic, tp.partition, position))
        return True
