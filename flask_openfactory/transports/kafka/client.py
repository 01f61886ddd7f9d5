"""What every Kafka client of one transport shares, and what its readers are given.

The broker address and settings, one health tracker and one set of counters,
librdkafka's quieted log, this process's origin mark, the consumers (created
per use, assign only), the assets topic and its partitions, and the real end
of a partition. The producer side (``producer.py``) fills in ``producer``,
``log_reset`` and the producer's error callback; readers and followers are
typed against this class, so they never import the transport that makes them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from ..base import HealthTracker, Transport, TransportOptions
from ..partitioning import partition_for_key
from ..pid import THIS_PROCESS
from .config import CONNECTION_CODES, CONSUMER_DEFAULTS, parse_bootstrap, split_config
from .messages import FETCH_LIMIT, fetch
from .tap import CommandTap
from .topics import count_partitions, lookup_topic
from .watch import QuietKafkaLog

log = logging.getLogger("flask_openfactory.kafka")

END_SCAN_SECONDS = 5.0  # a flood of writes must not hold up finding the end

# Held while a reader's set joins or leaves ``written_sets`` (rare): two at once must not drop
# one. Renewed in a forked child, which must not inherit it held.
_registering = threading.Lock()


def _renew_registering() -> None:
    global _registering
    _registering = threading.Lock()


os.register_at_fork(after_in_child=_renew_registering)


class KafkaClient(Transport):
    """The shared half of ``KafkaTransport``: configuration, consumers, topic lookup."""

    def __init__(self, url: str, options: TransportOptions | None = None) -> None:
        super().__init__(url, options)
        self.bootstrap = parse_bootstrap(url)
        self._producer_config, self._consumer_config = split_config(dict(self.options.kafka_config))
        self._topic: str | None = self.options.topic
        self._partitions: int | None = None
        self._ksql: Any = None
        self._health = HealthTracker("no broker contact yet")
        # queue_full: produce attempts refused by a full queue (retried); busy: publishes given up (TransportBusy)
        self._stats = {"published": 0, "delivered": 0, "delivery_failures": 0, "queue_full": 0, "busy": 0,
                       "recreated": 0, "stuck": 0, "position_resets": 0, "gaps_read_again": 0,
                       "gaps_accepted": 0}
        self.quiet = QuietKafkaLog(log, f"the connection to Kafka at {self.bootstrap}")
        self.origin = uuid.uuid4().hex.encode("ascii")  # this transport instance, one per process
        # The values of the attribute records this process writes, one set per reader that skips
        # them (its follower of its own asset; its command reader while it reads by itself as
        # owner): a set lookup instead of reading a record's header, which costs more than the rest
        # of a record. A hint only: a value not found is checked by its header as before.
        self.written_sets: tuple[set[bytes], ...] = ()  # replaced whole: the producer reads it lock-free
        # key -> (pid, open a tap): the follower of this process's own asset, which can feed its
        # command reader (``tap.py``); the pid keeps a parent's follower from feeding a forked child.
        self._tap_sources: dict[bytes, tuple[int, Callable[[], CommandTap | None]]] = {}

    def track_written(self) -> set[bytes]:
        """A set the producer adds each attribute record's value to, until ``untrack_written``."""
        written: set[bytes] = set()
        with _registering:
            self.written_sets = (*self.written_sets, written)
        return written

    def untrack_written(self, written: set[bytes]) -> None:
        with _registering:
            self.written_sets = tuple(kept for kept in self.written_sets if kept is not written)

    # -- the follower feeding the command reader (``tap.py``) ---------------------------

    def offer_tap(self, key: bytes, source: Callable[[], CommandTap | None]) -> None:
        self._tap_sources[key] = (THIS_PROCESS.pid, source)

    def withdraw_tap(self, key: bytes, source: Callable[[], CommandTap | None]) -> None:
        offered = self._tap_sources.get(key)
        if offered is not None and offered[1] == source:
            del self._tap_sources[key]

    def open_tap(self, key: bytes) -> CommandTap | None:
        """A tap on this process's follower of ``key``, if one runs here and knows its position."""
        offered = self._tap_sources.get(key)
        if offered is None or offered[0] != THIS_PROCESS.pid:
            return None
        return offered[1]()

    # -- what the producer side provides ---------------------------------------------

    @abstractmethod
    def producer(self) -> Producer:
        """This process's producer."""

    @abstractmethod
    def log_reset(self, what: str) -> None:
        """A partition was recreated or truncated: the producer's state belongs to the old log."""

    @abstractmethod
    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's error callback of the producer."""

    # -- configuration -------------------------------------------------------------

    @property
    def display_url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def _base(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap, "error_cb": self._on_error, "logger": self.quiet}

    def consumer_config(self, **overrides: Any) -> dict[str, Any]:
        base = {**self._base(), "error_cb": self._on_consumer_error}
        return {**base, **CONSUMER_DEFAULTS, **self._consumer_config, **overrides}

    def _on_consumer_error(self, error: KafkaError) -> None:
        """Consumers report here: their fatal errors surface in poll(), the producer stays."""
        if error.code() in CONNECTION_CODES:
            self._health.set(False, f"Kafka at {self.bootstrap}: {error.str()}")
        log.debug("Kafka consumer: %s", error.str())

    def _consumer(self, **overrides: Any) -> Consumer:
        config = self.consumer_config(**overrides)
        config.setdefault("group.id", f"ofa-reader-{uuid.uuid4()}")  # assign() only: never joins
        return Consumer(config)

    def _ksqldb(self) -> Any:
        if self._ksql is None and self.options.ksqldb_url:
            from ...ksqldb import KsqlDBClient

            self._ksql = KsqlDBClient(self.options.ksqldb_url)
        return self._ksql

    # -- the topic -------------------------------------------------------------------

    @property
    def topic(self) -> str:
        """Explicit config, else ksqlDB's ASSETS_STREAM topic, else ``ofa_assets``."""
        if self._topic is None:
            self._topic = lookup_topic(self._ksqldb(), self.options.ksqldb_url)
        return self._topic

    def partitions(self, timeout: float = 10.0) -> int:
        """How many partitions the assets topic has (never creates the topic)."""
        if self._partitions is None:
            self._partitions = count_partitions(self.producer(), self.topic, self.bootstrap, timeout)
        return self._partitions

    def partition_of(self, asset_uuid: str) -> int:
        return partition_for_key(asset_uuid.encode("utf-8"), self.partitions())

    def end_offset(self, partition: int) -> int:
        """The offset after the last record, read rather than trusted.

        Some brokers answer ListOffsets LATEST with the last batch's first
        offset + 1; starting there would replay old commands. So read forward
        from the watermark until a fetch drains what the broker sent: the batch
        holding the watermark arrives whole. Not "until a fetch comes back
        empty": on a partition other assets write to all the time, that never
        happens (start hung and the first commands were skipped). The broker's
        end-of-partition event ends a fetch that finds nothing past the
        watermark at once (without it, every such scan waited out its timeout:
        200 ms of each worker's start).
        """
        consumer = self._consumer(**{"enable.partition.eof": True})
        try:
            tp = TopicPartition(self.topic, partition)
            _, end = consumer.get_watermark_offsets(tp, timeout=10.0, cached=False)
            consumer.assign([TopicPartition(self.topic, partition, max(end, 0))])
            deadline = time.monotonic() + END_SCAN_SECONDS
            while True:
                fetched = fetch(consumer, 0.2)
                messages = [m for m in fetched if m.error() is None]
                if messages:
                    end = messages[-1].offset() + 1
                if len(fetched) < FETCH_LIMIT or time.monotonic() >= deadline:
                    return max(end, 0)
        finally:
            consumer.close()
