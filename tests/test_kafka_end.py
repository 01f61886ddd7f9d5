"""The real end of a partition, read rather than trusted (``KafkaClient.end_offset``).

Where a reader starts (a first owner, the read-back of answered calls) depends on
it: an end too early replays old commands, one too late skips new ones. The test
broker answers the watermark with the first offset of the last batch + 1, so a
batch of several records is the case that must be read forward.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer

from flask_openfactory.transports import TransportOptions, create_transport
from flask_openfactory.transports.kafka import KafkaTransport
from kafka_config import KAFKA_TEST_CONFIG


@pytest.fixture
def transport(kafka_broker: Any, unique_topic: str) -> Iterator[KafkaTransport]:
    kafka_broker.create_topic(unique_topic, 1)
    made = create_transport(f"kafka://{kafka_broker.bootstrap}",
                            TransportOptions(topic=unique_topic, kafka_config=dict(KAFKA_TEST_CONFIG)))
    assert isinstance(made, KafkaTransport)
    yield made
    made.close(2.0)


def write(transport: KafkaTransport, count: int, *, one_batch: bool) -> None:
    producer = Producer({"bootstrap.servers": transport.bootstrap, "linger.ms": 100 if one_batch else 0})
    for n in range(count):
        producer.produce(transport.topic, key=b"ASSET", value=b"%d" % n)
        if not one_batch:
            assert producer.flush(10) == 0
    assert producer.flush(10) == 0


def test_an_empty_partition_ends_at_zero(transport: KafkaTransport) -> None:
    assert transport.end_offset(0) == 0


def test_records_written_one_by_one_end_after_the_last(transport: KafkaTransport) -> None:
    write(transport, 3, one_batch=False)
    assert transport.end_offset(0) == 3


def test_a_last_batch_of_several_records_is_read_to_its_end(transport: KafkaTransport) -> None:
    write(transport, 2, one_batch=False)
    write(transport, 7, one_batch=True)
    assert transport.end_offset(0) == 9
    write(transport, 1, one_batch=False)
    assert transport.end_offset(0) == 10
