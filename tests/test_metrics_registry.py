"""The metrics endpoint registered with the platform's Prometheus registry (reference-notes 6.8):
once per deployment, withdrawn when the whole server stops; nothing without a registry.

On the test broker; ksqlDB (the registry's asset type, the targets table, the
topic behind METRICS_TARGETS_SOURCE) is the stand-in.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from flask_openfactory.runtime import AssetRuntime, RuntimeSettings
from flask_openfactory.runtime.metrics_registry import MetricsTarget
from flask_openfactory.transports import TransportOptions
from harness.topic_reader import raw_records
from kafka_config import KAFKA_TEST_CONFIG
from ksqldb_standin import running_standin


def read_all(bootstrap: str, topic: str) -> list[tuple[str, Any]]:
    return [(key.decode(), None if value is None else json.loads(value))
            for key, value in raw_records(bootstrap, topic) if key is not None]


@pytest.fixture
def platform(kafka_broker, unique_topic: str) -> Iterator[tuple[Any, Any, str]]:  # type: ignore[no-untyped-def]
    targets_topic = f"{unique_topic}-metrics"
    kafka_broker.create_topic(unique_topic, 1)
    kafka_broker.create_topic(targets_topic, 1)
    with running_standin(unique_topic) as standin:
        standin.topics["METRICS_TARGETS_SOURCE"] = targets_topic
        yield kafka_broker, standin, targets_topic


def worker(kafka_broker, standin, topic: str, asset_uuid: str) -> AssetRuntime:  # type: ignore[no-untyped-def]
    options = TransportOptions(topic=topic, kafka_config=dict(KAFKA_TEST_CONFIG), ksqldb_url=standin.url)
    return AssetRuntime(RuntimeSettings(asset_uuid=asset_uuid, transport_url="kafka://" + kafka_broker.bootstrap,
                                        transport_options=options, metrics_target=MetricsTarget(4000),
                                        execute_commands=False))


def test_registered_once_per_deployment_and_withdrawn_at_stop(platform, unique_topic: str) -> None:  # type: ignore[no-untyped-def]
    kafka_broker, standin, targets_topic = platform
    standin.set_asset_type("PROMETHEUS-REGISTRY", "Prometheus.Registry")
    asset_uuid = f"Press-{uuid.uuid4().hex[:6]}"
    first = worker(kafka_broker, standin, unique_topic, asset_uuid)
    first.start()
    seen = read_all(kafka_broker.bootstrap, targets_topic)
    assert seen == [(asset_uuid, {"HOST": asset_uuid.lower(), "PORT": 4000, "PATH": "/ofa/metrics"})]
    standin.metrics_targets[asset_uuid] = {"HOST": asset_uuid.lower(), "PORT": "4000", "PATH": "/ofa/metrics"}
    second = worker(kafka_broker, standin, unique_topic, asset_uuid)  # another web worker of the same server
    second.start()
    second.stop(5.0, publish_unavailable=False)  # one worker recycled: the server still serves
    assert len(read_all(kafka_broker.bootstrap, targets_topic)) == 1
    first.stop(5.0)  # the server stops
    assert read_all(kafka_broker.bootstrap, targets_topic)[1:] == [(asset_uuid, None)]
    queries = " ".join(standin.statements("/query"))
    assert "SELECT ASSET_UUID FROM ASSETS_TYPE WHERE TYPE='Prometheus.Registry';" in queries
    assert "DESCRIBE METRICS_TARGETS_SOURCE EXTENDED;" in standin.statements("/ksql")


def test_nothing_is_registered_without_a_registry(platform, unique_topic: str) -> None:  # type: ignore[no-untyped-def]
    kafka_broker, standin, targets_topic = platform
    runtime = worker(kafka_broker, standin, unique_topic, f"PRESS-{uuid.uuid4().hex[:6].upper()}")
    runtime.start()
    runtime.stop(5.0)
    assert read_all(kafka_broker.bootstrap, targets_topic) == []
    assert "DESCRIBE METRICS_TARGETS_SOURCE EXTENDED;" not in standin.statements("/ksql")
