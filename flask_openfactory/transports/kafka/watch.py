"""Kafka faults the clients do not report by themselves, told once each.

* ``QuietKafkaLog``: librdkafka's log lines (the ``logger`` client setting).
  While the broker is away it repeats its connection errors several times a
  second per client; they become one line when the fault starts and one
  when it clears, with the count of lines held back.
* ``EndWatch``: a read position beyond the partition's end (the topic was
  deleted and recreated, or truncated by an unclean leader election). The
  broker may answer such a fetch with nothing at all, forever; the watch
  compares the position with the partition's end while the reader is idle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from ..quiet import Repeats

# librdkafka facilities and texts of a broker connection that failed or timed out
_CONNECTION_FACILITIES = frozenset({"FAIL", "ERROR", "BROKERFAIL", "REQTMOUT", "DISCONNECT", "CONNECT",
                                    "REBOOTSTRAP", "TIMEOUT", "COORDFAIL"})
_CONNECTION_TEXTS = ("Connection refused", "brokers are down", "Disconnected", "timed out", "Timed out",
                     "Connect to", "Connection reset", "No route to host", "Name or service not known")

END_CHECK_EVERY = 1.0  # seconds between two end checks of an idle reader
EXPLAINED_FOR = 30.0  # seconds a low watermark, once shown to be a quirk, is trusted without a new read
CLEAR_AFTER = 2.0  # seconds the broker must answer before a connection fault counts as over


def is_connection_fault(facility: str, text: str) -> bool:
    return facility in _CONNECTION_FACILITIES or any(t in text for t in _CONNECTION_TEXTS)


class QuietKafkaLog:
    """What librdkafka calls as its ``logger``: ``log(level, fmt, facility, client, text)``."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger = logger
        self.repeats = Repeats(logger, what)
        self._ok_since: float | None = None  # the broker answers since then, during a fault

    def log(self, level: int, fmt: str, *args: Any) -> None:
        facility = str(args[0]) if args else ""
        text = str(args[-1]) if args else fmt
        if level >= logging.INFO and is_connection_fault(facility, text):
            self.connection_error(text)
            return
        self.logger.log(level, fmt, *args)

    def connection_error(self, text: str) -> None:
        """A connection error (a librdkafka line, or a consumer's error event)."""
        self._ok_since = None
        self.repeats.failed("connection", "Kafka connection fault: %s", text, level=logging.ERROR)

    def cleared(self) -> None:
        """The broker answered; the fault is over once it has answered for CLEAR_AFTER seconds
        (clients reconnect one by one: their last complaints belong to the same fault)."""
        if not self.repeats.failing:
            return
        now = time.monotonic()
        if self._ok_since is None:
            self._ok_since = now
        elif now - self._ok_since >= CLEAR_AFTER:
            self._ok_since = None
            self.repeats.cleared()

    @property
    def held_back(self) -> int:
        return self.repeats.total_held_back


class EndWatch:
    """Detects a read position beyond the partition's end, cheaply enough for an idle poll loop.

    The watermark is only a hint (some brokers answer ListOffsets with the last
    batch's first offset + 1, which looks like "beyond"): ``true_end`` reads
    the real end before anything is concluded; a watermark so explained is
    trusted for EXPLAINED_FOR seconds (the same value may later be the real
    end of a recreated partition).
    """

    def __init__(self, true_end: Callable[[], int]) -> None:
        self._true_end = true_end
        self._checked_at = 0.0
        self._explained: tuple[int, float] | None = None  # (watermark shown to be a quirk, when)

    def beyond(self, consumer: Consumer, tp: TopicPartition, position: int) -> int | None:
        """The partition's real end when ``position`` lies beyond it, else None."""
        now = time.monotonic()
        if position < 0 or now - self._checked_at < END_CHECK_EVERY:
            return None
        self._checked_at = now
        try:
            _, high = consumer.get_watermark_offsets(tp, timeout=2.0, cached=False)
        except KafkaException:  # the broker is away: nothing to conclude now
            return None
        if high < 0 or position <= high:
            return None
        if self._explained is not None and self._explained[0] == high and now - self._explained[1] < EXPLAINED_FOR:
            return None
        try:
            end = self._true_end()
        except KafkaException:
            return None
        if position <= end:
            self._explained = (high, now)
            return None
        self._explained = None
        return end
