"""Reading an asset's records back: its current state, its methods, its answered calls.

State and methods come from ksqlDB when configured (its table overlaid with
the partition's tail, which is at least as new), else from a bounded look-back
over the asset's partition. The calls (commands and results) since a moment
are read from the partition itself, completely or not at all.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from ...wire.protocol import METHOD, SAMPLES, UNAVAILABLE, Record, RecordError
from ..base import TransportError, is_call_id
from .client import KafkaClient
from .messages import GapGuard, fetch, written_as_attribute

log = logging.getLogger("flask_openfactory.kafka")

CALLS_SCAN_SECONDS = 60.0  # reading back the max age's calls at start: complete, or an error


def read_state(client: KafkaClient, asset_uuid: str) -> dict[str, Record]:
    """From ksqlDB when configured (overlaid with the partition's tail), else a bounded look-back."""
    ksql = client._ksqldb()
    if ksql is not None:
        try:
            state = rows_to_records(asset_uuid, ksql.asset_state(asset_uuid))
        except Exception as exc:
            log.warning("ksqlDB snapshot of %s failed (%s); reading back the partition", asset_uuid, exc)
        else:
            # ksqlDB's table trails the topic: what the partition's tail holds is at least
            # as new, so a read never answers older than a write already acknowledged.
            for rid, record in lookback(client, asset_uuid).items():
                current = state.get(rid)
                if current is None or current.timestamp == UNAVAILABLE or record.timestamp >= current.timestamp:
                    state[rid] = record
            return state
    return lookback(client, asset_uuid)


def read_methods(client: KafkaClient, asset_uuid: str) -> dict[str, Any]:
    """From ksqlDB when configured (its state query leaves methods out)."""
    ksql = client._ksqldb()
    if ksql is not None:
        try:
            return dict(ksql.asset_methods(asset_uuid))
        except Exception as exc:
            log.warning("ksqlDB methods of %s failed (%s); reading back the partition", asset_uuid, exc)
    return {rid: r.value for rid, r in lookback(client, asset_uuid).items() if r.type == METHOD}


def lookback(client: KafkaClient, asset_uuid: str) -> dict[str, Record]:
    """The latest record per ID among the partition's last ``lookback`` records."""
    partition = client.partition_of(asset_uuid)
    consumer = client._consumer()
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(client.topic, partition), timeout=10.0)
        start = max(low, high - client.options.lookback)
        if high <= start:
            return {}
        tp = TopicPartition(client.topic, partition, start)
        consumer.assign([tp])
        state: dict[str, Record] = {}
        position = start
        gaps = GapGuard()
        deadline = time.monotonic() + 10.0
        while position < high and time.monotonic() < deadline:
            for message in fetch(consumer, 0.5):
                if message.error():
                    continue
                if gaps.read_again(consumer, tp, position, message.offset(), what=f"the log of {asset_uuid}",
                                   stats=client._stats):
                    break
                position = message.offset() + 1
                if message.key() != asset_uuid.encode("utf-8"):
                    continue
                try:
                    record = Record.from_wire(message.key(), message.value())
                except RecordError:
                    continue
                state[record.id] = record
        return state
    finally:
        consumer.close()


def rows_to_records(asset_uuid: str, rows: list[dict[str, Any]]) -> dict[str, Record]:
    """ksqlDB answers VALUE as text; Samples come back as numbers when they parse."""
    state: dict[str, Record] = {}
    for row in rows:
        rid, rtype = row.get("ID"), row.get("TYPE")
        if not isinstance(rid, str) or not isinstance(rtype, str):
            continue
        value = row.get("VALUE")
        if rtype == SAMPLES and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        try:
            state[rid] = Record.create(asset_uuid, rid, value, tag=str(row.get("TAG") or ""), type=rtype,
                                       timestamp=str(row.get("TIMESTAMP") or UNAVAILABLE))
        except ValueError:
            continue
    return state


def read_calls(client: KafkaClient, asset_uuid: str, since: float) -> list[Record]:
    """From the offset the broker gives for ``since`` to the end, our key's calls only.

    Attribute records (marked by a header) are skipped undecoded; the read
    must be complete, so running out of time is an error, not a short answer.
    """
    partition = client.partition_of(asset_uuid)
    consumer = client._consumer()
    key = asset_uuid.encode("utf-8")
    try:
        wanted = TopicPartition(client.topic, partition, max(int(since * 1000), 0))
        start = consumer.offsets_for_times([wanted], timeout=10.0)[0].offset
        end = client.end_offset(partition)
        if start < 0 or start >= end:
            return []
        tp = TopicPartition(client.topic, partition, start)
        consumer.assign([tp])
        found: list[Record] = []
        position = start
        gaps = GapGuard()
        deadline = time.monotonic() + CALLS_SCAN_SECONDS
        while position < end:
            if time.monotonic() >= deadline:
                raise TransportError(
                    f"Kafka at {client.bootstrap}: reading the answered calls of {asset_uuid} back to "
                    f"offset {start} took over {CALLS_SCAN_SECONDS:g}s (at {position} of {end})")
            for message in fetch(consumer, 0.5):
                if message.error():
                    continue
                if gaps.read_again(consumer, tp, position, message.offset(), what=f"the calls of {asset_uuid}",
                                   stats=client._stats):
                    break
                position = message.offset() + 1
                if message.key() != key:
                    continue
                headers = message.headers()
                if headers and written_as_attribute(headers):
                    continue
                try:
                    record = Record.from_wire(key, message.value())
                except RecordError:
                    continue
                if is_call_id(record.id):
                    found.append(record)
        return found
    except KafkaException as exc:
        raise TransportError(f"Kafka at {client.bootstrap}: cannot read back calls of {asset_uuid}: "
                             f"{exc.args[0].str()}") from None
    finally:
        consumer.close()
