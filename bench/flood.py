"""Other assets publishing at full speed (run as a subprocess: its own GIL and CPU).

``python -m bench.flood BOOTSTRAP TOPIC SECONDS UUID...`` writes, for each UUID,
records of that asset with its own producer, round robin, until the time is
up; prints how many records were delivered, as JSON.
"""

from __future__ import annotations

import json
import sys
import time

from confluent_kafka import Producer

from flask_openfactory.wire.protocol import Record
from harness.kafka_settings import RAW_PRODUCER_CONFIG


def flood(bootstrap: str, topic: str, seconds: float, uuids: list[str]) -> int:
    clients = []
    for asset in uuids:
        producer = Producer({"bootstrap.servers": bootstrap, **RAW_PRODUCER_CONFIG})
        value = Record.create(asset, "load", 1.0, tag="Bench.Load", type="Samples").to_wire()
        clients.append((producer, asset.encode("utf-8"), value))
    deadline = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < deadline:
        for _ in range(200):
            for producer, key, value in clients:
                try:
                    producer.produce(topic, key=key, value=value)
                    sent += 1
                except BufferError:
                    producer.poll(0.005)
        for producer, _, _ in clients:
            producer.poll(0)
    undelivered = sum(producer.flush(30) for producer, _, _ in clients)
    return sent - undelivered


def main() -> None:
    bootstrap, topic, seconds, *uuids = sys.argv[1:]
    print(json.dumps({"delivered": flood(bootstrap, topic, float(seconds), uuids)}))


if __name__ == "__main__":
    main()
