"""Client settings every measured Kafka client shares, for the app and for raw baselines.

The benchmarks and the soak configure their clients from here, so the app and
its baselines fetch and produce alike on the test broker.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["KAFKA_CONFIG", "KAFKA_LOG", "RAW_CONSUMER_CONFIG", "RAW_PRODUCER_CONFIG"]

# Client settings every measured client shares (test-broker-notes.md):
# without fetch.wait.max.ms=10 each consume waits ~250 ms on Tansu.
KAFKA_CONFIG: dict[str, Any] = {
    "consumer.fetch.wait.max.ms": 10,
    "consumer.fetch.min.bytes": 1,
    "consumer.session.timeout.ms": 2000,
    "consumer.heartbeat.interval.ms": 500,
}
# librdkafka logs expected disconnects (broker restarts) on stderr without a
# logger; the bench's stderr is for progress, and failures raise anyway.
KAFKA_LOG = logging.getLogger("bench.kafka")
KAFKA_LOG.addHandler(logging.NullHandler())
KAFKA_LOG.propagate = False

# The same settings for a raw confluent-kafka consumer.
RAW_CONSUMER_CONFIG: dict[str, Any] = {
    "fetch.wait.max.ms": 10,
    "fetch.min.bytes": 1,
    "enable.auto.commit": False,
    "enable.partition.eof": False,
    "logger": KAFKA_LOG,
}
# The raw baseline's producer: the extension's settings (transports/kafka/config.py) but tuned for
# throughput (linger 5 ms, where the extension waits 1 ms for latency): the stricter baseline.
RAW_PRODUCER_CONFIG: dict[str, Any] = {
    "partitioner": "murmur2_random",
    "linger.ms": 5,
    "enable.idempotence": True,
    "queue.buffering.max.messages": 100_000,
    "logger": KAFKA_LOG,
}
