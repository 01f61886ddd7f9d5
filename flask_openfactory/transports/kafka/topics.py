"""Which topic the asset's records go to, and how many partitions it has.

The name is explicit configuration, else the topic of ksqlDB's ASSETS_STREAM,
else the platform's default; the partition count comes from the broker's
metadata. Neither lookup ever creates the topic: platform topics are the
platform's.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from confluent_kafka import Producer

from ..base import TransportError
from .config import DEFAULT_TOPIC

if TYPE_CHECKING:
    from ...ksqldb import KsqlDBClient

log = logging.getLogger("flask_openfactory.kafka")

ASSETS_STREAM = "ASSETS_STREAM"  # the platform's ksqlDB stream over the assets topic


def lookup_topic(client: KsqlDBClient | None, ksqldb_url: str | None) -> str:
    """ksqlDB's ASSETS_STREAM topic when a client is given, else (or when unreachable) the default."""
    topic = None
    if client is not None:
        from ...ksqldb import KsqlDBUnavailable

        try:
            topic = client.describe_topic(ASSETS_STREAM)
        except KsqlDBUnavailable as exc:  # unreachable: the platform's default name
            log.warning("ksqlDB at %s cannot be reached (%s); using %r", ksqldb_url, exc, DEFAULT_TOPIC)
    return topic or DEFAULT_TOPIC


def count_partitions(producer: Producer, topic: str, bootstrap: str, timeout: float) -> int:
    """How many partitions ``topic`` has, from the broker's metadata; an unusable topic is an error."""
    metadata = producer.list_topics(topic, timeout=timeout)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        reason = found.error.str() if found is not None and found.error else "no partitions"
        raise TransportError(f"Kafka at {bootstrap}: topic {topic!r} is not usable: {reason}")
    return len(found.partitions)
