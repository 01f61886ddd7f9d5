"""``kafka://host:port[,host:port]``: the asset on a real OpenFactory platform.

* One producer per process, created lazily in the process that uses it;
  asynchronous produce with delivery reports served by a poller thread
  (never a flush per write), key = asset UUID, Java-compatible murmur2.
* Commands are read from the one partition that holds our key, never the
  whole topic: a consumer group named for the asset elects the executor, and
  each member assigns itself only that partition out of what the group gives
  it (so it fetches nothing else).
* Offsets are committed explicitly by the runtime once a command's result is
  delivered (at least once); without a committed offset the reader starts at
  the end of the partition and commits that position at once.

Settings in ``kafka_config`` pass through to librdkafka; keys prefixed
``producer.`` or ``consumer.`` apply to that kind of client only.

This module assembles the transport: the shared clients (``client.py``), the
producer side (``producer.py``), read-backs (``snapshot.py``), the follower
(``follower.py``) and the command readers (``reader.py``, ``election.py``).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from ...wire.protocol import Record
from ..base import KEEP_ALIVE, CommandReader, Follower, TransportError, TransportOptions
from .election import KafkaGroupReader, KafkaLockedReader
from .follower import KafkaFollower
from .producer import KafkaProducing
from .snapshot import read_calls, read_methods, read_state

log = logging.getLogger("flask_openfactory.kafka")


class KafkaTransport(KafkaProducing):
    scheme = "kafka"

    def __init__(self, url: str, options: TransportOptions | None = None) -> None:
        super().__init__(url, options)
        self._probe_lock = threading.Lock()  # one consumer answers end_position for the whole process
        self._probe_consumer: Consumer | None = None
        self._probe_pid = 0

    # -- reads -----------------------------------------------------------------------

    def snapshot(self, asset_uuid: str) -> dict[str, Record]:
        """From ksqlDB when configured (overlaid with the partition's tail), else a bounded look-back."""
        return read_state(self, asset_uuid)

    def methods(self, asset_uuid: str) -> dict[str, Any]:
        """From ksqlDB when configured (its state query leaves methods out)."""
        return read_methods(self, asset_uuid)

    def follow(
        self, asset_uuid: str, *, skip_own_writes: bool = False, resume: Follower | None = None
    ) -> Follower:
        return KafkaFollower(self, asset_uuid, skip_own_writes=skip_own_writes, resume=resume)

    def mark_start(self, asset_uuid: str, group: str) -> None:
        partition = self.partition_of(asset_uuid)
        tp = TopicPartition(self.topic, partition)
        consumer = self._consumer(**{"group.id": group})
        try:
            if consumer.committed([tp], timeout=10.0)[0].offset < 0:
                end = self.end_offset(partition)
                consumer.commit(offsets=[TopicPartition(self.topic, partition, end)], asynchronous=False)
        except KafkaException as exc:
            raise TransportError(f"Kafka at {self.bootstrap}: cannot mark the start of the command log of "
                                 f"{asset_uuid}: {exc.args[0].str()}") from None
        finally:
            consumer.close()

    def end_position(self, asset_uuid: str) -> int:
        """The partition's high watermark, asked of the broker (one round trip).

        A broker that answers the last batch's first offset + 1 (see
        ``end_offset``) still works here: a follower that reached that offset
        received the whole batch holding it.
        """
        tp = TopicPartition(self.topic, self.partition_of(asset_uuid))
        with self._probe_lock:
            if self._probe_consumer is None or self._probe_pid != os.getpid():
                if self._probe_consumer is not None:
                    KEEP_ALIVE.append(self._probe_consumer)  # inherited through fork: never destroyed
                self._probe_consumer, self._probe_pid = self._consumer(), os.getpid()
            try:
                _, high = self._probe_consumer.get_watermark_offsets(tp, timeout=5.0, cached=False)
            except KafkaException as exc:
                raise TransportError(f"Kafka at {self.bootstrap}: cannot read the end of {tp.topic}"
                                     f"[{tp.partition}]: {exc.args[0].str()}") from None
        return max(high, 0)

    def calls_since(self, asset_uuid: str, since: float) -> list[Record]:
        """From the offset the broker gives for ``since`` to the end, our key's calls only.

        Attribute records (marked by a header) are skipped undecoded; the read
        must be complete, so running out of time is an error, not a short answer.
        """
        return read_calls(self, asset_uuid, since)

    def command_reader(self, asset_uuid: str, group: str) -> CommandReader:
        if self.options.election == "group":
            return KafkaGroupReader(self, asset_uuid, group)
        return KafkaLockedReader(self, asset_uuid, group)

    def watch_reader(self, asset_uuid: str, group: str) -> CommandReader:
        if self.options.election == "group":
            return KafkaGroupReader(self, asset_uuid, group, attributes=True)
        return KafkaLockedReader(self, asset_uuid, group, attributes=True)

    # -- status ----------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        if self._pid != os.getpid():
            return
        self._closing.set()
        if self._poller is not None:
            self._poller.join(timeout)
            self._poller = None
        producer, self._producer = self._producer, None
        if producer is not None:
            remaining = producer.flush(max(0.0, timeout))
            if remaining:
                log.error("%d record(s) not delivered to Kafka at %s before close", remaining, self.bootstrap)
        if self._ksql is not None:
            self._ksql.close()
        with self._probe_lock:
            probe, self._probe_consumer = self._probe_consumer, None
        if probe is not None and self._probe_pid == os.getpid():
            probe.close()

