"""In-process assets of the publishing benchmarks: many attributes and methods on Kafka.

The served apps (the repository's app and the plain Flask baseline) are in
``harness.apps``, shared with the soak.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask


def _generated_method(index: int) -> Callable[[], int]:
    def method() -> int:
        return index

    method.__name__ = method.__qualname__ = f"method_{index}"
    method.__doc__ = f"Generated method {index}."
    return method


def attribute_ids(count: int) -> list[tuple[str, str]]:
    """(ID, TAG) of the attributes ``asset_app`` declares: raw baselines write the same records."""
    return [(f"value_{i}", f"Bench.Value{i}") for i in range(count)]


def asset_app(
    *,
    bootstrap: str,
    topic: str,
    asset_uuid: str,
    lock_dir: str,
    attributes: int = 5,
    methods: int = 2,
    election: str = "lock",
    kafka_config: dict[str, Any] | None = None,
) -> tuple[Flask, list[Any]]:
    """An app with ``attributes`` sample attributes and ``methods`` methods on Kafka.

    Returns the app and its attribute declarations (set through the public API).
    """
    from flask_openfactory import AssetBlueprint, FlaskOpenFactory, SampleAttribute
    from harness.kafka_settings import KAFKA_CONFIG

    app = Flask(f"bench_asset_{asset_uuid}")
    app.config.update(
        SECRET_KEY="bench-only",
        OPENFACTORY_APP_UUID=asset_uuid,
        OPENFACTORY_TRANSPORT_URL=f"kafka://{bootstrap}",
        OPENFACTORY_ASSETS_TOPIC=topic,
        OPENFACTORY_KAFKA_CONFIG=dict(kafka_config if kafka_config is not None else KAFKA_CONFIG),
        OPENFACTORY_KAFKA_ELECTION=election,
        OPENFACTORY_LOCK_DIR=lock_dir,
        OPENFACTORY_LOG_LEVEL="WARNING",
    )
    FlaskOpenFactory(app)
    bp = AssetBlueprint("bench_asset", __name__)
    declared = [
        bp.attribute(SampleAttribute(attr_id, tag=tag, default=0.0)) for attr_id, tag in attribute_ids(attributes)
    ]
    for i in range(methods):
        bp.ofa_method(name=f"method_{i}")(_generated_method(i))
    app.register_blueprint(bp)
    return app, declared
