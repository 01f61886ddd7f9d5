"""Everything a topic of the test broker holds, read from the beginning (tests check the wire)."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, TopicPartition


def raw_records(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4()}"})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    raw: list[tuple[bytes | None, bytes | None]] = []
    while (batch := consumer.consume(500, 1.0)):
        raw.extend((m.key(), m.value()) for m in batch if m.error() is None)
    consumer.close()
    return raw
