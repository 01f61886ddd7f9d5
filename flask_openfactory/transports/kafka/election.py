"""Which process reads the asset's commands: the two elections.

* ``KafkaLockedReader`` (the default): a host lock per asset; instant
  takeover, no rebalances when workers churn. One host per asset UUID, which
  is how the platform deploys replicas.
* ``KafkaGroupReader``: consumer-group membership, for several hosts sharing
  one UUID; a consumer group named for the asset elects the executor, and each
  member assigns itself only the partition holding our key out of what the
  group gives it (so it fetches nothing else).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from ..base import LogEntry
from .client import KafkaClient
from .reader import PartitionReader

log = logging.getLogger("flask_openfactory.kafka")


class KafkaLockedReader(PartitionReader):
    """Election by a host lock: instant takeover, no rebalances when workers churn.

    Offsets are still committed under the asset's consumer group (assign and
    commit, no join), so a restarted deployment resumes where it stopped. One
    host per asset UUID, which is how the platform deploys replicas.
    """

    RETRY = 0.1
    TAPS = True  # one process reads as owner until it closes: nothing moves the partition under a tap

    def __init__(self, transport: KafkaClient, asset_uuid: str, group: str, *, attributes: bool = False) -> None:
        super().__init__(transport, asset_uuid, group, attributes=attributes)
        from ..locks import HostLock, lock_path

        self.lock = HostLock(lock_path(transport.options.lock_dir, "kafka", transport.bootstrap,
                                       self._topic, group, asset_uuid))
        self._idle = threading.Event()

    def poll(self, timeout: float) -> list[LogEntry]:
        if self._closed:
            return []
        if not self._owns:
            deadline = time.monotonic() + timeout
            while not self.lock.try_acquire():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return []
                self._idle.wait(min(self.RETRY, remaining))
            try:
                consumer = self._transport._consumer(**{"group.id": self._group})
                start = self._start_position(consumer)
                consumer.assign([TopicPartition(self._topic, self._partition, start)])
                self._consumer = consumer
            except BaseException:
                self._owns = False
                self.lock.release()
                raise
        return self._read(timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._idle.set()
        self._close_consumer()
        self.lock.close()


class KafkaGroupReader(PartitionReader):
    """Election by consumer-group membership, for several hosts sharing one UUID.

    Each member assigns itself only our partition out of what the group gives
    it, so it never fetches other assets' partitions. It reads with its own
    consumer only (no tap): that consumer's polls serve the group's rebalances.
    """

    def __init__(self, transport: KafkaClient, asset_uuid: str, group: str, *, attributes: bool = False) -> None:
        super().__init__(transport, asset_uuid, group, attributes=attributes)
        config = transport.consumer_config(**{"group.id": group})
        self._incremental = "cooperative" in str(config.get("partition.assignment.strategy", ""))
        self.assignments: list[list[int]] = []  # what the group gave us
        self._consumer = transport._consumer(**{"group.id": group})
        self._mark_start(self._consumer)
        self._consumer.subscribe([self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_revoke)

    def stats(self) -> dict[str, Any]:
        """Also what the group gave this member, each time (it keeps only our partition)."""
        return {**super().stats(), "assignments": [list(given) for given in self.assignments]}

    def _mark_start(self, consumer: Consumer) -> None:
        """A group that never committed starts where the log ends now, before joining.

        The join completes a second or more after ``start`` returns; a first
        owner that took "the end" only then skipped every command sent
        meanwhile. Best effort: a broker may refuse a commit from a non-member
        while another member joins, and that member then marks the start.
        """
        tp = TopicPartition(self._topic, self._partition)
        try:
            if consumer.committed([tp], timeout=10.0)[0].offset < 0:
                end = self._transport.end_offset(self._partition)
                consumer.commit(offsets=[TopicPartition(self._topic, self._partition, end)], asynchronous=False)
        except KafkaException as exc:
            log.info("could not mark the start of the command log of %s before joining: %s", self._key, exc)

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._incremental:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignments.append(sorted(tp.partition for tp in partitions))
        if not any(tp.partition == self._partition for tp in partitions):
            self._assign(consumer, [])  # fetch none of the others
            return
        start = self._start_position(consumer)
        self._assign(consumer, [TopicPartition(self._topic, self._partition, start)])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        ours = any(tp.partition == self._partition for tp in partitions)
        if self._owns and ours:
            log.info("command log of %s moved to another process", self._key)
            self._owns = False
            self._track_writes(False)
        if not self._incremental:
            consumer.unassign()
        else:
            consumer.incremental_unassign([TopicPartition(self._topic, self._partition)] if ours else [])

    def poll(self, timeout: float) -> list[LogEntry]:
        if self._closed or self._consumer is None:
            return []
        return self._read(timeout)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close_consumer()  # leaves the group: another member takes over
