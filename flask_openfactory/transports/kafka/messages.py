"""Consumed records as every reader of the partition takes them.

A batch fetch that returns as soon as one message arrives, the typed view of
a consumed message, and the headers we put on the attribute records we write
(the value format is the contract's, untouched): our own readers skip those
records undecoded. The command reader needs only commands and results; a
follower already applied its own process's writes.
"""

from __future__ import annotations

from typing import Protocol, cast

from confluent_kafka import Consumer, KafkaError

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
