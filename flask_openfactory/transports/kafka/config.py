"""What the Kafka clients are configured with, known without I/O.

The ``kafka://`` URL's broker list, librdkafka's settings for our producer and
consumers (and how ``kafka_config`` keys are split between them), the masking
of secrets for logs and status, and the error codes that mean "no connection".
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError

from ..base import ConfigurationError

DEFAULT_TOPIC = "ofa_assets"
SECRET_HINTS = ("password", "secret", "token", "key.pem", "private")
CONNECTION_CODES = (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE)

# Both kinds of client. librdkafka drops the bootstrap connection once the first metadata
# answer names the broker, and spaces connections to the named one by half of
# reconnect.backoff.ms (at least 11 ms): 50 ms at the default of 100, paid by every new
# client at its first request, several times in a worker's boot. Reconnecting to a broker
# that is down still backs off exponentially up to reconnect.backoff.max.ms (10 s).
CLIENT_DEFAULTS: dict[str, Any] = {
    "reconnect.backoff.ms": 20,
}
PRODUCER_DEFAULTS: dict[str, Any] = {
    **CLIENT_DEFAULTS,
    "partitioner": "murmur2_random",
    "linger.ms": 1,  # batches under load; a command result is not held back 5 ms
    "enable.idempotence": True,
    "message.timeout.ms": 300_000,
    "allow.auto.create.topics": False,  # platform topics are the platform's
}
CONSUMER_DEFAULTS: dict[str, Any] = {
    **CLIENT_DEFAULTS,
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "latest",
    "enable.partition.eof": False,
    "fetch.wait.max.ms": 25,
    "fetch.min.bytes": 1,
    "session.timeout.ms": 10_000,
    "heartbeat.interval.ms": 1_000,
    # Sticky: a worker joining or leaving does not move the executor role.
    "partition.assignment.strategy": "cooperative-sticky",
    "allow.auto.create.topics": False,
}


def parse_bootstrap(url: str) -> str:
    servers = url.split("://", 1)[1].strip().strip("/")
    hosts = [s.strip() for s in servers.split(",") if s.strip()]
    if not hosts:
        raise ConfigurationError(f"Kafka URL {url!r} names no broker; use kafka://host:port")
    for host in hosts:
        name, sep, port = host.rpartition(":")
        if not sep or not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"Kafka URL {url!r}: {host!r} is not host:port")
    return ",".join(hosts)


def mask(config: dict[str, Any]) -> dict[str, Any]:
    """The config with every secret-looking value replaced, for logs and status."""
    return {k: ("***" if any(h in k.lower() for h in SECRET_HINTS) else v) for k, v in config.items()}


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``kafka_config`` as (producer, consumer) settings: ``producer.``/``consumer.`` keys go to one kind."""
    common = {k: v for k, v in config.items() if not k.startswith(("producer.", "consumer."))}
    producer = {**common, **{k[9:]: v for k, v in config.items() if k.startswith("producer.")}}
    consumer = {**common, **{k[9:]: v for k, v in config.items() if k.startswith("consumer.")}}
    return producer, consumer
