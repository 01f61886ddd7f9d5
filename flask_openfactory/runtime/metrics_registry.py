"""Registering ``/ofa/metrics`` with the platform's Prometheus registry (reference-notes 6.8).

When the platform runs an asset of type ``Prometheus.Registry``, scrape targets
are records on the topic behind ksqlDB's ``METRICS_TARGETS_SOURCE``: key = the
app's UUID, value ``{"HOST": "<uuid lower>", "PORT": <port>, "PATH": "<path>"}``,
and a null value withdraws it (the deployer's teardown writes one). Here the
app registers itself at start, skipping the write when ksqlDB's
``METRICS_TARGETS`` already holds the same target (so several web workers
register once per deployment), and withdraws it where it reports
``avail=UNAVAILABLE`` (the whole server stopping, not one worker). ``PORT`` is
sent as a number, as the table's INTEGER column declares (the reference sends
text and relies on ksqlDB's coercion).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

REGISTRY_TYPE = "Prometheus.Registry"
TARGETS_SOURCE = "METRICS_TARGETS_SOURCE"
TARGETS_TABLE = "METRICS_TARGETS"

log = logging.getLogger("flask_openfactory.metrics_registry")


@dataclass(frozen=True, slots=True)
class MetricsTarget:
    port: int
    path: str = "/ofa/metrics"

    def value(self, asset_uuid: str) -> dict[str, Any]:
        return {"HOST": asset_uuid.lower(), "PORT": self.port, "PATH": self.path}


def _ksqldb(transport: Any) -> Any:
    """The Kafka transport's ksqlDB client; None elsewhere (no platform, no registry)."""
    finder = getattr(transport, "_ksqldb", None)
    return finder() if callable(finder) and hasattr(transport, "producer") else None


def registry_present(client: Any) -> bool:
    from ..ksqldb import quote  # here: importing this module must not load requests

    rows = client.query(f"SELECT ASSET_UUID FROM ASSETS_TYPE WHERE TYPE={quote(REGISTRY_TYPE)};")
    return bool(rows)


def _registered(client: Any, asset_uuid: str, wanted: dict[str, Any]) -> bool:
    from ..ksqldb import quote

    try:
        rows = client.query(f"SELECT HOST, PORT, PATH FROM {TARGETS_TABLE} WHERE APPLICATION_UUID={quote(asset_uuid)};")
    except Exception:  # no such table yet: not registered
        return False
    expected = {k: str(v) for k, v in wanted.items()}  # ksqlDB may hand PORT back as text
    return any({k.upper(): str(v) for k, v in row.items()} == expected for row in rows)


def _produce(transport: Any, client: Any, asset_uuid: str, value: bytes | None, timeout: float) -> None:
    topic = client.describe_topic(TARGETS_SOURCE)
    errors: list[Any] = []
    producer = transport.producer()
    producer.produce(topic, key=asset_uuid.encode("utf-8"), value=value,
                     on_delivery=lambda error, _message: errors.append(error) if error is not None else None)
    if producer.flush(timeout) or errors:
        raise RuntimeError(f"the metrics target of {asset_uuid!r} was not delivered to {topic!r}: "
                           f"{errors[0] if errors else 'timed out'}")


def register(transport: Any, asset_uuid: str, target: MetricsTarget, *, timeout: float = 5.0) -> bool:
    """Register the target if the platform runs a registry; True when it is registered."""
    client = _ksqldb(transport)
    if client is None or not registry_present(client):
        return False
    wanted = target.value(asset_uuid)
    if _registered(client, asset_uuid, wanted):
        return True
    _produce(transport, client, asset_uuid, json.dumps(wanted).encode("utf-8"), timeout)
    log.info("[%s] metrics target %s registered with the Prometheus registry", asset_uuid, wanted)
    return True


def withdraw(transport: Any, asset_uuid: str, *, timeout: float = 2.0) -> bool:
    """Remove the target (a null value keyed by the UUID) if the platform runs a registry."""
    client = _ksqldb(transport)
    if client is None or not registry_present(client):
        return False
    _produce(transport, client, asset_uuid, None, timeout)
    log.info("[%s] metrics target withdrawn from the Prometheus registry", asset_uuid)
    return True
