"""``kafka://host:port[,host:port]``: the asset on a real OpenFactory platform.

* One producer per process, created lazily in the process that uses it;
  asynchronous produce with delivery reports served by a poller thread
  (never a flush per write), key = asset UUID, Java-compatible murmur2.
* Commands are read from the one partition that holds our key, never the
  whole topic: a consumer group named for the asset elects the executor, and
  each member assigns itself only that partition out of what the group gives
  it (so it fetches nothing else).
* Offsets are committed explicitly by the runtime once a command's result is
  delivered (at least once); without a committed offset the reader starts at
  the end of the partition and commits that position at once.

Settings in ``kafka_config`` pass through to librdkafka; keys prefixed
``producer.`` or ``consumer.`` apply to that kind of client only.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol, cast

from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from ..protocol import Record, RecordError
from .base import (
    KEEP_ALIVE,
    CommandReader,
    ConfigurationError,
    DeliveryCallback,
    Follower,
    Health,
    HealthTracker,
    LogEntry,
    Transport,
    TransportBusy,
    TransportError,
    TransportOptions,
    is_call_id,
)
from .kafka_watch import EndWatch, QuietKafkaLog
from .partitioning import partition_for_key

log = logging.getLogger("flask_openfactory.kafka")

DEFAULT_TOPIC = "ofa_assets"
FETCH_LIMIT = 500  # records handed over per fetch
END_SCAN_SECONDS = 5.0  # a flood of writes must not hold up finding the end
CALLS_SCAN_SECONDS = 60.0  # reading back the max age's calls at start: complete, or an error
SECRET_HINTS = ("password", "secret", "token", "key.pem", "private")
# No delivery report for STUCK_REPORT seconds while records wait and the broker
# answers: the outgoing queue is stuck (an idempotent producer whose id a restarted
# broker lost retries forever without an error): readiness says so; after
# STUCK_AFTER seconds the producer is recreated.
STUCK_REPORT = 5.0
STUCK_AFTER = 10.0
PURGE_WAIT = 10.0  # seconds to get back what a replaced producer held
_PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)
# Delivery errors of a producer that must be replaced (its idempotence state is broken):
# the record is produced again by the new producer rather than reported as failed.
_PRODUCER_FATAL = (KafkaError._FATAL, KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, KafkaError.UNKNOWN_PRODUCER_ID,
                   KafkaError.INVALID_PRODUCER_EPOCH)
_CONNECTION_CODES = (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE)

# Headers on the attribute records we write (the value format is the contract's,
# untouched): our own readers skip them undecoded. The command reader needs only
# commands and results; a follower already applied its own process's writes.
KIND_HEADER = "ofa-kind"
ORIGIN_HEADER = "ofa-origin"
ATTRIBUTE_KIND = b"attribute"

PRODUCER_DEFAULTS: dict[str, Any] = {
    "partitioner": "murmur2_random",
    "linger.ms": 1,  # batches under load; a command result is not held back 5 ms
    "enable.idempotence": True,
    "message.timeout.ms": 300_000,
    "allow.auto.create.topics": False,  # platform topics are the platform's
}
CONSUMER_DEFAULTS: dict[str, Any] = {
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


def _split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    common = {k: v for k, v in config.items() if not k.startswith(("producer.", "consumer."))}
    producer = {**common, **{k[9:]: v for k, v in config.items() if k.startswith("producer.")}}
    consumer = {**common, **{k[9:]: v for k, v in config.items() if k.startswith("consumer.")}}
    return producer, consumer


class KafkaTransport(Transport):
    scheme = "kafka"

    def __init__(self, url: str, options: TransportOptions | None = None) -> None:
        super().__init__(url, options)
        self.bootstrap = parse_bootstrap(url)
        self._producer_config, self._consumer_config = _split_config(dict(self.options.kafka_config))
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._producer: Producer | None = None
        self._poller: threading.Thread | None = None
        self._closing = threading.Event()
        self._topic: str | None = self.options.topic
        self._partitions: int | None = None
        self._ksql: Any = None
        self._health = HealthTracker("no broker contact yet")
        # queue_full: produce attempts refused by a full queue (retried); busy: publishes given up (TransportBusy)
        self._stats = {"published": 0, "delivered": 0, "delivery_failures": 0, "queue_full": 0, "busy": 0,
                       "recreated": 0, "stuck": 0, "position_resets": 0}
        self._last_failure_log = 0.0
        # Set when a write waited the whole publish timeout in vain, cleared by the next delivery
        # report (which made room): meanwhile writes fail at once instead of each waiting again.
        self._full = False
        self._suppressed_failures = 0
        self._last_failure = ""
        self.quiet = QuietKafkaLog(log, f"the connection to Kafka at {self.bootstrap}")
        self._progress_at = time.monotonic()  # last delivery report, or the queue seen empty
        self._stuck: str | None = None  # why the outgoing queue is considered stuck
        self._requeue: Producer | None = None  # records purged from this producer go to the new one
        self._fatal: str | None = None  # a fatal error seen in a callback, handled after the poll returns
        self._held: list[tuple[Message, Any]] = []  # records the fatal producer failed: for its successor
        self.origin = uuid.uuid4().hex.encode("ascii")  # this transport instance, one per process
        self._attribute_headers: list[tuple[str, str | bytes | None]] = [
            (KIND_HEADER, ATTRIBUTE_KIND), (ORIGIN_HEADER, self.origin)]
        self._probe_lock = threading.Lock()  # one consumer answers end_position for the whole process
        self._probe_consumer: Consumer | None = None
        self._probe_pid = 0

    # -- configuration -------------------------------------------------------------

    @property
    def display_url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def _base(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap, "error_cb": self._on_error, "logger": self.quiet}

    def consumer_config(self, **overrides: Any) -> dict[str, Any]:
        base = {**self._base(), "error_cb": self._on_consumer_error}
        return {**base, **CONSUMER_DEFAULTS, **self._consumer_config, **overrides}

    def _on_consumer_error(self, error: KafkaError) -> None:
        """Consumers report here: their fatal errors surface in poll(), the producer stays."""
        if error.code() in _CONNECTION_CODES:
            self._health.set(False, f"Kafka at {self.bootstrap}: {error.str()}")
        log.debug("Kafka consumer: %s", error.str())

    def _ksqldb(self) -> Any:
        if self._ksql is None and self.options.ksqldb_url:
            from ..ksqldb import KsqlDBClient

            self._ksql = KsqlDBClient(self.options.ksqldb_url)
        return self._ksql

    @property
    def topic(self) -> str:
        """Explicit config, else ksqlDB's ASSETS_STREAM topic, else ``ofa_assets``."""
        if self._topic is None:
            client = self._ksqldb()
            topic = None
            if client is not None:
                from ..ksqldb import KsqlDBUnavailable

                try:
                    topic = client.describe_topic("ASSETS_STREAM")
                except KsqlDBUnavailable as exc:  # unreachable: the platform's default name
                    log.warning("ksqlDB at %s cannot be reached (%s); using %r",
                                self.options.ksqldb_url, exc, DEFAULT_TOPIC)
            self._topic = topic or DEFAULT_TOPIC
        return self._topic

    def partitions(self, timeout: float = 10.0) -> int:
        """How many partitions the assets topic has (never creates the topic)."""
        if self._partitions is None:
            metadata = self.producer().list_topics(self.topic, timeout=timeout)
            topic = metadata.topics.get(self.topic)
            if topic is None or topic.error is not None or not topic.partitions:
                reason = topic.error.str() if topic is not None and topic.error else "no partitions"
                raise TransportError(f"Kafka at {self.bootstrap}: topic {self.topic!r} is not usable: {reason}")
            self._partitions = len(topic.partitions)
        return self._partitions

    def partition_of(self, asset_uuid: str) -> int:
        return partition_for_key(asset_uuid.encode("utf-8"), self.partitions())

    # -- writes ----------------------------------------------------------------------

    def producer(self) -> Producer:
        """This process's producer; one inherited through fork is left untouched."""
        with self._lock:
            if self._producer is None or self._pid != os.getpid():
                if self._pid != os.getpid():
                    KEEP_ALIVE.append(self._producer)
                    self._pid, self._closing, self._full = os.getpid(), threading.Event(), False
                    self._lock = threading.Lock()
                    self._requeue, self._stuck, self._fatal = None, None, None
                self._producer = Producer({
                    **self._base(), **PRODUCER_DEFAULTS,
                    "queue.buffering.max.messages": self.options.max_pending,
                    "queue.buffering.max.kbytes": min(2**31 - 1, max(1, self.options.max_pending_bytes // 1024)),
                    **self._producer_config,
                })
                self._progress_at = time.monotonic()
                self._poller = threading.Thread(target=self._serve, name="ofa-kafka-poll", daemon=True)
                self._poller.start()
            return self._producer

    def _recreate(self, producer: Producer, reason: str) -> None:
        """Replace a producer that can no longer deliver; what it still holds is queued on the new one.

        The old client is purged (each record comes back as a purge report and is
        produced again, in order, by the new client) and kept referenced, never
        destroyed. Records purged in flight may already be on the log: at least
        once, as for any retry; readers drop repeated results and commands by id.
        """
        with self._lock:
            if self._producer is not producer:
                return  # already replaced
            self._producer = None
            self._stats["recreated"] += 1
            KEEP_ALIVE.append(producer)
        held, self._held = self._held, []
        log.error("Kafka producer recreated (%s); %d record(s) it held are queued again", reason,
                  len(producer) + len(held))
        self._requeue = producer
        try:
            for message, report in held:  # failed first, so before those still queued: order kept
                self._produce_again(message, report)
            producer.purge()
            deadline = time.monotonic() + PURGE_WAIT
            while len(producer) and time.monotonic() < deadline:  # each purge report: to the new producer
                producer.poll(0.05)
            if len(producer):
                log.error("%d record(s) of the replaced Kafka producer did not come back within %gs",
                          len(producer), PURGE_WAIT)
        except Exception:
            log.exception("purging the replaced Kafka producer failed")
        finally:
            self._requeue = None
        if not self._closing.is_set():
            self.producer()  # the new client (and its poller) now, not at the next write

    def log_reset(self, what: str) -> None:
        """A partition was recreated or truncated: the producer's idempotence state (its id and
        sequence numbers) belongs to the old log; it is replaced by the poller thread."""
        if self._producer is not None and self._pid == os.getpid():
            self._fatal = self._fatal or f"{what} was recreated or truncated"

    def _requeued(self, error: KafkaError | None, message: Message, report: Any) -> bool:
        """A record purged from a replaced producer goes to the new one; one that a producer
        in need of replacement failed is held for its successor."""
        if error is None:
            return False
        fatal = error.code() in _PRODUCER_FATAL or error.fatal()
        if self._requeue is not None and (fatal or error.code() in _PURGED):  # while being replaced
            return self._produce_again(message, report)
        if fatal:
            self._fatal = self._fatal or f"fatal error: {error.str()}"
            self._held.append((message, report))
            return True
        return False

    def _produce_again(self, message: Message, report: Any) -> bool:
        topic = message.topic()
        assert topic is not None  # a delivery report names the topic its record was produced to
        try:
            self.producer().produce(topic, value=message.value(), key=message.key(), on_delivery=report)
        except (BufferError, KafkaException) as exc:
            self._stats["delivery_failures"] += 1
            log.error("a record of the replaced Kafka producer could not be queued again: %s", exc)
            return False
        return True

    def _serve(self) -> None:
        """Serve delivery reports and watch the broker (a frozen broker sends no error)."""
        producer = self._producer
        next_check = 0.0
        while producer is not None and producer is self._producer and not self._closing.is_set():
            try:
                if self._fatal is not None:  # never from inside a callback of the same client
                    reason, self._fatal = self._fatal, None
                    self._recreate(producer, reason)
                    break
                producer.poll(0.1)  # re-raises what a delivery callback raised
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + (1.0 if self._health.get().ok else 0.5)
                    if self._probe(producer, timeout=2.0):
                        self._watch_queue(producer)
                    else:  # records wait for the broker, not for a stuck client
                        self._progress_at = time.monotonic()
            except KafkaException as exc:
                if exc.args[0].fatal():  # raised by poll: the client is unusable
                    self._fatal = f"fatal error: {exc.args[0].str()}"
                else:
                    log.exception("Kafka delivery report or probe failed")
            except Exception:  # this thread serves every delivery report: it must not die
                log.exception("Kafka delivery report or probe failed")

    def _watch_queue(self, producer: Producer) -> None:
        """The broker answers: records waiting with no delivery report for STUCK_AFTER is a stuck queue."""
        pending = len(producer)
        now = time.monotonic()
        if pending == 0:
            self._progress_at = now
            return
        idle = now - self._progress_at
        if idle < STUCK_REPORT:
            return
        first = self._stuck is None
        recreate = idle >= STUCK_AFTER
        self._stuck = (f"Kafka at {self.bootstrap}: the outgoing queue is stuck: {pending} record(s) have waited "
                       f"{idle:.0f}s with no delivery report although the broker answers; the producer "
                       + (f"was recreated at {time.strftime('%H:%M:%SZ', time.gmtime())}" if recreate
                          else f"is recreated after {STUCK_AFTER:g}s"))
        if first:
            self._stats["stuck"] += 1
            log.error("%s", self._stuck)
        if recreate:
            self._recreate(producer, "outgoing queue stuck")
            self._progress_at = now

    def _probe(self, producer: Producer, timeout: float) -> bool:
        try:
            producer.list_topics(self.topic, timeout=timeout)
        except KafkaException as exc:
            self._health.set(False, f"Kafka at {self.bootstrap} does not answer: {exc.args[0].str()}")
            return False
        self._health.set(True, f"Kafka at {self.bootstrap}, topic {self.topic!r}")
        self.quiet.cleared()
        return True

    def _on_error(self, error: KafkaError) -> None:
        if error.code() in _CONNECTION_CODES:
            self._health.set(False, f"Kafka at {self.bootstrap}: {error.str()}")
        if error.fatal():
            self._fatal = f"fatal error: {error.str()}"
        else:
            log.debug("Kafka: %s", error.str())

    def _report(self, error: KafkaError | None, message: Message) -> None:
        """Delivery report of a plain write (one bound method: no closure per record)."""
        if self._requeued(error, message, self._report):
            return
        self._delivered(error)

    def _delivered(self, error: KafkaError | None) -> None:
        self._full = False  # a record left the queue: there is room again
        self._progress_at = time.monotonic()
        if error is None:
            self._stats["delivered"] += 1
            self._stuck = None
        else:
            self._failed(error)

    def _reporter(self, on_delivery: DeliveryCallback) -> Callable[[KafkaError | None, Message], None]:
        """A delivery report that also tells the caller (results: commit once durable)."""

        def report(error: KafkaError | None, message: Message) -> None:
            if self._requeued(error, message, report):
                return
            self._delivered(error)
            on_delivery(None if error is None else TransportError(f"Kafka: {error.str()}"))

        return report

    def publish(self, record: Record, on_delivery: DeliveryCallback | None = None) -> None:
        value = record.to_wire()
        rid = record.id
        headers = None if rid.endswith(("_CMD", "_RESULT")) else self._attribute_headers
        report: Any = self._report if on_delivery is None else self._reporter(on_delivery)

        producer = self._producer
        if producer is not None and self._pid == os.getpid() and self._topic is not None:
            try:  # the hot path: no lock, no property
                producer.produce(self._topic, value=value, key=record.key, headers=headers, on_delivery=report)
                self._stats["published"] += 1
                return
            except BufferError:
                pass
            except KafkaException as exc:
                if not exc.args[0].fatal():
                    raise TransportError(f"Kafka at {self.bootstrap}: {exc.args[0].str()}") from None
                self._recreate(producer, f"fatal error: {exc.args[0].str()}")  # then once more, below
        deadline = time.monotonic() + (0.0 if self._full else self.options.publish_timeout)
        recreated = False
        while True:
            producer = self.producer()
            try:
                producer.produce(self.topic, value=value, key=record.key, headers=headers, on_delivery=report)
                self._stats["published"] += 1
                return
            except BufferError:
                self._stats["queue_full"] += 1
                if time.monotonic() >= deadline:
                    self._full = True
                    self._stats["busy"] += 1
                    raise self._busy(producer) from None
                time.sleep(0.01)  # the poller frees the queue as deliveries complete
            except KafkaException as exc:
                if exc.args[0].fatal() and not recreated:
                    self._recreate(producer, f"fatal error: {exc.args[0].str()}")
                    recreated = True
                    continue
                raise TransportError(f"Kafka at {self.bootstrap}: {exc.args[0].str()}") from None

    def saturated(self) -> TransportBusy | None:
        producer = self._producer
        return self._busy(producer) if self._full and producer is not None else None

    def _busy(self, producer: Producer) -> TransportBusy:
        error = TransportBusy(
            f"Kafka at {self.bootstrap}: the outgoing queue is full ({len(producer)} records wait for the "
            f"broker; limits OPENFACTORY_MAX_PENDING={self.options.max_pending} records, "
            f"OPENFACTORY_MAX_PENDING_BYTES={self.options.max_pending_bytes} bytes) and no room was made within "
            f"OPENFACTORY_PUBLISH_TIMEOUT={self.options.publish_timeout:g}s: nothing was queued, retry later"
        )
        error.retry_after = max(1.0, self.options.publish_timeout)
        return error

    def _failed(self, error: KafkaError) -> None:
        self._stats["delivery_failures"] += 1
        self._last_failure = f"{error.str()} at {time.strftime('%H:%M:%SZ', time.gmtime())}"
        if self.on_failure is not None:
            self.on_failure(TransportError(f"Kafka: {error.str()}"))
        now = time.monotonic()
        if now - self._last_failure_log >= 10.0:
            extra = f" ({self._suppressed_failures} more since the last report)" if self._suppressed_failures else ""
            log.error("Kafka delivery failed: %s%s", error.str(), extra)
            self._last_failure_log, self._suppressed_failures = now, 0
        else:
            self._suppressed_failures += 1

    def flush(self, timeout: float) -> int:
        if self._producer is None or self._pid != os.getpid():
            return 0
        return int(self._producer.flush(timeout))

    # -- reads -----------------------------------------------------------------------

    def _consumer(self, **overrides: Any) -> Consumer:
        config = self.consumer_config(**overrides)
        config.setdefault("group.id", f"ofa-reader-{uuid.uuid4()}")  # assign() only: never joins
        return Consumer(config)

    def snapshot(self, asset_uuid: str) -> dict[str, Record]:
        """From ksqlDB when configured (overlaid with the partition's tail), else a bounded look-back."""
        client = self._ksqldb()
        if client is not None:
            try:
                state = _rows_to_records(asset_uuid, client.asset_state(asset_uuid))
            except Exception as exc:
                log.warning("ksqlDB snapshot of %s failed (%s); reading back the partition", asset_uuid, exc)
            else:
                # ksqlDB's table trails the topic: what the partition's tail holds is at least
                # as new, so a read never answers older than a write already acknowledged.
                for rid, record in self._lookback(asset_uuid).items():
                    current = state.get(rid)
                    if current is None or current.timestamp == "UNAVAILABLE" or record.timestamp >= current.timestamp:
                        state[rid] = record
                return state
        return self._lookback(asset_uuid)

    def methods(self, asset_uuid: str) -> dict[str, Any]:
        """From ksqlDB when configured (its state query leaves methods out)."""
        client = self._ksqldb()
        if client is not None:
            try:
                return dict(client.asset_methods(asset_uuid))
            except Exception as exc:
                log.warning("ksqlDB methods of %s failed (%s); reading back the partition", asset_uuid, exc)
        return {rid: r.value for rid, r in self._lookback(asset_uuid).items() if r.type == "Method"}

    def _lookback(self, asset_uuid: str) -> dict[str, Record]:
        partition = self.partition_of(asset_uuid)
        consumer = self._consumer()
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=10.0)
            start = max(low, high - self.options.lookback)
            if high <= start:
                return {}
            consumer.assign([TopicPartition(self.topic, partition, start)])
            state: dict[str, Record] = {}
            position = start
            deadline = time.monotonic() + 10.0
            while position < high and time.monotonic() < deadline:
                for message in _fetch(consumer, 0.5):
                    if message.error():
                        continue
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

    def end_offset(self, partition: int) -> int:
        """The offset after the last record, read rather than trusted.

        Some brokers answer ListOffsets LATEST with the last batch's first
        offset + 1; starting there would replay old commands. So read forward
        from the watermark until a fetch drains what the broker sent: the batch
        holding the watermark arrives whole. Not "until a fetch comes back
        empty": on a partition other assets write to all the time, that never
        happens (start hung and the first commands were skipped).
        """
        consumer = self._consumer()
        try:
            tp = TopicPartition(self.topic, partition)
            _, end = consumer.get_watermark_offsets(tp, timeout=10.0, cached=False)
            consumer.assign([TopicPartition(self.topic, partition, max(end, 0))])
            deadline = time.monotonic() + END_SCAN_SECONDS
            while True:
                fetched = _fetch(consumer, 0.2)
                messages = [m for m in fetched if m.error() is None]
                if messages:
                    end = messages[-1].offset() + 1
                if len(fetched) < FETCH_LIMIT or time.monotonic() >= deadline:
                    return max(end, 0)
        finally:
            consumer.close()

    def follow(self, asset_uuid: str, *, skip_own_writes: bool = False) -> Follower:
        return KafkaFollower(self, asset_uuid, skip_own_writes=skip_own_writes)

    def mark_start(self, asset_uuid: str, group: str) -> None:
        partition = self.partition_of(asset_uuid)
        tp = TopicPartition(self.topic, partition)
        consumer = self._consumer(**{"group.id": group})
        try:
            if consumer.committed([tp], timeout=10.0)[0].offset < 0:
                end = self.end_offset(partition)
                consumer.commit(offsets=[TopicPartition(self.topic, partition, end)], asynchronous=False)
        except KafkaException as exc:
            raise TransportError(f"Kafka at {self.bootstrap}: cannot mark the start of the command log of "
                                 f"{asset_uuid}: {exc.args[0].str()}") from None
        finally:
            consumer.close()

    def end_position(self, asset_uuid: str) -> int:
        """The partition's high watermark, asked of the broker (one round trip).

        A broker that answers the last batch's first offset + 1 (see
        ``end_offset``) still works here: a follower that reached that offset
        received the whole batch holding it.
        """
        tp = TopicPartition(self.topic, self.partition_of(asset_uuid))
        with self._probe_lock:
            if self._probe_consumer is None or self._probe_pid != os.getpid():
                if self._probe_consumer is not None:
                    KEEP_ALIVE.append(self._probe_consumer)  # inherited through fork: never destroyed
                self._probe_consumer, self._probe_pid = self._consumer(), os.getpid()
            try:
                _, high = self._probe_consumer.get_watermark_offsets(tp, timeout=5.0, cached=False)
            except KafkaException as exc:
                raise TransportError(f"Kafka at {self.bootstrap}: cannot read the end of {tp.topic}"
                                     f"[{tp.partition}]: {exc.args[0].str()}") from None
        return max(high, 0)

    def calls_since(self, asset_uuid: str, since: float) -> list[Record]:
        """From the offset the broker gives for ``since`` to the end, our key's calls only.

        Attribute records (marked by a header) are skipped undecoded; the read
        must be complete, so running out of time is an error, not a short answer.
        """
        partition = self.partition_of(asset_uuid)
        consumer = self._consumer()
        key = asset_uuid.encode("utf-8")
        try:
            wanted = TopicPartition(self.topic, partition, max(int(since * 1000), 0))
            start = consumer.offsets_for_times([wanted], timeout=10.0)[0].offset
            end = self.end_offset(partition)
            if start < 0 or start >= end:
                return []
            consumer.assign([TopicPartition(self.topic, partition, start)])
            found: list[Record] = []
            position = start
            deadline = time.monotonic() + CALLS_SCAN_SECONDS
            while position < end:
                if time.monotonic() >= deadline:
                    raise TransportError(
                        f"Kafka at {self.bootstrap}: reading the answered calls of {asset_uuid} back to "
                        f"offset {start} took over {CALLS_SCAN_SECONDS:g}s (at {position} of {end})")
                for message in _fetch(consumer, 0.5):
                    if message.error():
                        continue
                    position = message.offset() + 1
                    if message.key() != key or _header(message, KIND_HEADER) == ATTRIBUTE_KIND:
                        continue
                    try:
                        record = Record.from_wire(key, message.value())
                    except RecordError:
                        continue
                    if is_call_id(record.id):
                        found.append(record)
            return found
        except KafkaException as exc:
            raise TransportError(f"Kafka at {self.bootstrap}: cannot read back calls of {asset_uuid}: "
                                 f"{exc.args[0].str()}") from None
        finally:
            consumer.close()

    def command_reader(self, asset_uuid: str, group: str) -> CommandReader:
        if self.options.election == "group":
            return KafkaGroupReader(self, asset_uuid, group)
        return KafkaLockedReader(self, asset_uuid, group)

    def watch_reader(self, asset_uuid: str, group: str) -> CommandReader:
        if self.options.election == "group":
            return KafkaGroupReader(self, asset_uuid, group, attributes=True)
        return KafkaLockedReader(self, asset_uuid, group, attributes=True)

    # -- status ----------------------------------------------------------------------

    def check(self, timeout: float) -> Health:
        try:
            producer = self.producer()
        except KafkaException as exc:
            return Health(False, f"Kafka at {self.bootstrap}: {exc}")
        self._probe(producer, timeout)
        return self.health()

    def health(self) -> Health:
        if self._producer is None:
            return Health(False, f"Kafka at {self.bootstrap}: not connected in this process")
        health = self._health.get()
        if self._stuck is not None:
            return Health(False, self._stuck, health.since)
        failures = self._stats["delivery_failures"]
        if failures:
            health.detail += f"; {failures} record(s) failed delivery in this process, last: {self._last_failure}"
        return health

    def stats(self) -> dict[str, Any]:
        pending = len(self._producer) if self._producer is not None and self._pid == os.getpid() else 0
        return {**self._stats, "pending": pending, "queue_stuck": int(self._stuck is not None),
                "log_lines_held_back": self.quiet.held_back}

    def close(self, timeout: float = 5.0) -> None:
        if self._pid != os.getpid():
            return
        self._closing.set()
        if self._poller is not None:
            self._poller.join(timeout)
            self._poller = None
        producer, self._producer = self._producer, None
        if producer is not None:
            remaining = producer.flush(max(0.0, timeout))
            if remaining:
                log.error("%d record(s) not delivered to Kafka at %s before close", remaining, self.bootstrap)
        if self._ksql is not None:
            self._ksql.close()
        with self._probe_lock:
            probe, self._probe_consumer = self._probe_consumer, None
        if probe is not None and self._probe_pid == os.getpid():
            probe.close()


def _header(message: _Consumed, name: str) -> bytes | None:
    headers = message.headers()
    if headers:
        for key, value in headers:
            if key == name:
                return value
    return None


class _Consumed(Protocol):
    """A consumed ``Message`` as this module reads it (confluent-kafka types every getter Optional):
    one whose ``error()`` is None has its partition and offset, and headers as a list of pairs."""

    def error(self) -> KafkaError | None: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes | None]] | None: ...


def _fetch(consumer: Consumer, timeout: float, limit: int = FETCH_LIMIT) -> list[_Consumed]:
    """Return as soon as one message arrives, plus whatever is already buffered.

    ``consume(n, timeout)`` waits for all ``n`` or the whole timeout, which would
    put the timeout into every command's round trip.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    return cast("list[_Consumed]", [first, *consumer.consume(limit - 1, 0)])


def _rows_to_records(asset_uuid: str, rows: list[dict[str, Any]]) -> dict[str, Record]:
    """ksqlDB answers VALUE as text; Samples come back as numbers when they parse."""
    state: dict[str, Record] = {}
    for row in rows:
        rid, rtype = row.get("ID"), row.get("TYPE")
        if not isinstance(rid, str) or not isinstance(rtype, str):
            continue
        value = row.get("VALUE")
        if rtype == "Samples" and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        try:
            state[rid] = Record.create(asset_uuid, rid, value, tag=str(row.get("TAG") or ""), type=rtype,
                                       timestamp=str(row.get("TIMESTAMP") or "UNAVAILABLE"))
        except ValueError:
            continue
    return state


class KafkaFollower(Follower):
    """Tails our partition from its end (assign, no group), keeping our key only."""

    def __init__(self, transport: KafkaTransport, asset_uuid: str, *, skip_own_writes: bool = False) -> None:
        self._key = asset_uuid.encode("utf-8")
        self._origin = transport.origin if skip_own_writes else None
        self._transport = transport
        self._closed = False
        self._consumer = transport._consumer()
        tp = TopicPartition(transport.topic, transport.partition_of(asset_uuid))
        # Resolve "the end" now: OFFSET_END is resolved at the first fetch, which
        # could be after a result we are about to wait for.
        _, high = self._consumer.get_watermark_offsets(tp, timeout=10.0, cached=False)
        self._consumer.assign([TopicPartition(tp.topic, tp.partition, high if high >= 0 else OFFSET_END)])
        self._tp, self._position = tp, max(high, 0)
        self._end_watch = EndWatch(lambda: transport.end_offset(tp.partition))

    @property
    def position(self) -> int:
        return self._position

    def poll(self, timeout: float) -> list[Record]:
        if self._closed:
            return []
        records = []
        messages = _fetch(self._consumer, timeout)
        if not any(m.error() is None for m in messages):  # idle (error events aside)
            self._check_end()
        for message in messages:
            if message.error():
                continue
            self._position = message.offset() + 1
            if message.key() != self._key:
                continue
            if self._origin is not None and _header(message, ORIGIN_HEADER) == self._origin:
                continue  # written by this process, already applied
            try:
                records.append(Record.from_wire(message.key(), message.value()))
            except RecordError:
                continue
        return records

    def _check_end(self) -> None:
        """Following a recreated topic: its partition holds only records written since, so
        all of them are read (from its beginning), not only those after an old position."""
        end = self._end_watch.beyond(self._consumer, self._tp, self._position)
        if end is None:
            return
        try:
            low, _ = self._consumer.get_watermark_offsets(self._tp, timeout=2.0, cached=False)
        except KafkaException:
            low = 0  # a recreated partition starts at 0
        log.error("topic %r partition %d ends at offset %d, before the followed position %d: recreated or "
                  "truncated; following it from offset %d", self._tp.topic, self._tp.partition, end,
                  self._position, max(low, 0))
        self._consumer.seek(TopicPartition(self._tp.topic, self._tp.partition, max(low, 0)))
        self._position = max(low, 0)
        self._transport.log_reset(f"topic {self._tp.topic!r} partition {self._tp.partition}")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._consumer.close()


class _PartitionReader(CommandReader):
    """Reads our one partition from the committed position; subclasses decide ownership."""

    def __init__(self, transport: KafkaTransport, asset_uuid: str, group: str, *, attributes: bool = False) -> None:
        self._transport = transport
        self._attributes = attributes  # a subscription reads the attribute writes a command reader skips
        self._key = asset_uuid
        self._key_bytes = asset_uuid.encode("utf-8")
        self._group = group
        self._topic = transport.topic
        self._partition = transport.partition_of(asset_uuid)
        self._generation = 0
        self._owns = False
        self._closed = False
        self._position = -1
        self._committed = -1
        self._last_batch = 0
        self.received: dict[int, int] = {}  # records fetched per partition, for tests and status
        self._consumer: Consumer | None = None
        self._end_watch = EndWatch(lambda: self._transport.end_offset(self._partition))

    @property
    def owns(self) -> bool:
        return self._owns and not self._closed

    @property
    def generation(self) -> int:
        return self._generation

    def stats(self) -> dict[str, Any]:
        """Our partition and what was fetched from each: whether it reads only its own."""
        return {"partition": self._partition, "received": dict(self.received)}

    def _start_position(self, consumer: Consumer) -> int:
        """The committed offset; the first owner ever starts at the end and commits it."""
        tp = TopicPartition(self._topic, self._partition)
        committed = consumer.committed([tp], timeout=10.0)[0].offset
        if committed < 0:
            committed = self._transport.end_offset(self._partition)
            consumer.commit(offsets=[TopicPartition(self._topic, self._partition, committed)], asynchronous=False)
        self._position = self._committed = committed
        self._owns = True
        self._generation += 1
        # the runtime says "executing commands here" itself: the position is a detail
        log.log(logging.INFO if self._attributes else logging.DEBUG,
                "this process now %s %s (partition %d from offset %d)",
                "follows updates of" if self._attributes else "executes commands of",
                self._key, self._partition, committed)
        return committed

    def _read(self, timeout: float) -> list[LogEntry]:
        assert self._consumer is not None
        entries = []
        messages = _fetch(self._consumer, timeout)
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise TransportError(f"Kafka consumer failed: {error.str()}")
                if error.code() in _CONNECTION_CODES:
                    self._transport.quiet.connection_error(error.str())
                elif error.code() != KafkaError._PARTITION_EOF:
                    log.warning("Kafka consumer: %s", error.str())
                continue
            partition = message.partition()
            self.received[partition] = self.received.get(partition, 0) + 1
            if not self._owns or partition != self._partition:
                continue
            if message.offset() < self._position:  # the client reset itself (offset out of range)
                self._reset(message.offset(), f"went back to offset {message.offset()}")
            self._position = message.offset() + 1
            raw_key = message.key()
            if raw_key != self._key_bytes:  # another asset's record: count it, never decode it
                try:
                    key = raw_key.decode("utf-8") if raw_key is not None else None
                except UnicodeDecodeError:
                    key = None
                entries.append(LogEntry(message.offset(), key, None, "record of another asset"))
                continue
            if not self._attributes and _header(message, KIND_HEADER) == ATTRIBUTE_KIND:
                continue  # an attribute write: neither a command nor a result
            try:
                entries.append(LogEntry(message.offset(), self._key, Record.from_wire(raw_key, message.value())))
            except RecordError as exc:
                entries.append(LogEntry(message.offset(), self._key, None, str(exc)))
        self._last_batch = len(messages)
        if self._owns and not any(m.error() is None for m in messages):  # idle (error events aside)
            self._check_end()
        return entries

    def _check_end(self) -> None:
        """A committed or read position beyond the partition's end (topic recreated or truncated).

        The documented rule: resume from the partition's end as it is now, and
        commit it; what lies before was either answered already or belongs to
        a log that no longer exists, so nothing is run again. The generation
        moves on, so that the runtime forgets the positions of the old log.
        """
        assert self._consumer is not None
        tp = TopicPartition(self._topic, self._partition)
        end = self._end_watch.beyond(self._consumer, tp, self._position)
        if end is not None:
            self._reset(end, f"ends at offset {end}")
            self._consumer.seek(TopicPartition(self._topic, self._partition, end))

    def _reset(self, offset: int, what: str) -> None:
        """Continue from ``offset`` of a log that is not the one the old positions counted in."""
        assert self._consumer is not None
        log.error("the %s log of %s (topic %r partition %d) %s, before this reader's position %d: the topic "
                  "was recreated or truncated; resuming from offset %d, nothing before it is run",
                  "update" if self._attributes else "command", self._key, self._topic, self._partition, what,
                  self._position, offset)
        self._transport._stats["position_resets"] += 1
        self._transport.log_reset(f"topic {self._topic!r} partition {self._partition}")
        self._consumer.commit(offsets=[TopicPartition(self._topic, self._partition, offset)], asynchronous=False)
        self._position = self._committed = offset
        self._generation += 1

    def caught_up(self) -> bool:
        """The last fetch drained what was buffered and reached the watermark read now.

        Not "the last fetch was empty": while anything writes to the partition
        (other assets, a steady stream of commands) that never happens, and a
        new owner never started executing. The batch holding the watermark
        arrives whole, so a drained fetch that reached it read all of it.
        """
        if not self.owns or self._last_batch >= FETCH_LIMIT or self._consumer is None:
            return False
        _, high = self._consumer.get_watermark_offsets(
            TopicPartition(self._topic, self._partition), timeout=5.0, cached=False)
        return self._position >= high

    def commit(self, offset: int) -> None:
        if self.owns and self._consumer is not None and offset + 1 > self._committed:
            self._committed = offset + 1
            self._consumer.commit(
                offsets=[TopicPartition(self._topic, self._partition, offset + 1)], asynchronous=True)

    def _close_consumer(self) -> None:
        owned, self._owns = self._owns, False
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            if owned and self._committed >= 0:  # async commits may still be in flight
                consumer.commit(
                    offsets=[TopicPartition(self._topic, self._partition, self._committed)], asynchronous=False)
        except KafkaException as exc:
            log.warning("final commit of %s failed: %s", self._key, exc)
        try:
            consumer.close()
        except RuntimeError:
            pass


class KafkaLockedReader(_PartitionReader):
    """Election by a host lock: instant takeover, no rebalances when workers churn.

    Offsets are still committed under the asset's consumer group (assign and
    commit, no join), so a restarted deployment resumes where it stopped. One
    host per asset UUID, which is how the platform deploys replicas.
    """

    RETRY = 0.1

    def __init__(self, transport: KafkaTransport, asset_uuid: str, group: str, *, attributes: bool = False) -> None:
        super().__init__(transport, asset_uuid, group, attributes=attributes)
        from .locks import HostLock, lock_path

        self.lock = HostLock(lock_path(transport.options.lock_dir, "kafka", transport.bootstrap,
                                       self._topic, group, asset_uuid))
        self._idle = threading.Event()

    def poll(self, timeout: float) -> list[LogEntry]:
        if self._closed:
            return []
        if not self._owns:
            deadline = time.monotonic() + timeout
            while not self.lock.try_acquire():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return []
                self._idle.wait(min(self.RETRY, remaining))
            try:
                consumer = self._transport._consumer(**{"group.id": self._group})
                start = self._start_position(consumer)
                consumer.assign([TopicPartition(self._topic, self._partition, start)])
                self._consumer = consumer
            except BaseException:
                self._owns = False
                self.lock.release()
                raise
        return self._read(timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._idle.set()
        self._close_consumer()
        self.lock.close()


class KafkaGroupReader(_PartitionReader):
    """Election by consumer-group membership, for several hosts sharing one UUID.

    Each member assigns itself only our partition out of what the group gives
    it, so it never fetches other assets' partitions.
    """

    def __init__(self, transport: KafkaTransport, asset_uuid: str, group: str, *, attributes: bool = False) -> None:
        super().__init__(transport, asset_uuid, group, attributes=attributes)
        config = transport.consumer_config(**{"group.id": group})
        self._incremental = "cooperative" in str(config.get("partition.assignment.strategy", ""))
        self.assignments: list[list[int]] = []  # what the group gave us
        self._consumer = transport._consumer(**{"group.id": group})
        self._mark_start(self._consumer)
        self._consumer.subscribe([self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_revoke)

    def stats(self) -> dict[str, Any]:
        """Also what the group gave this member, each time (it keeps only our partition)."""
        return {**super().stats(), "assignments": [list(given) for given in self.assignments]}

    def _mark_start(self, consumer: Consumer) -> None:
        """A group that never committed starts where the log ends now, before joining.

        The join completes a second or more after ``start`` returns; a first
        owner that took "the end" only then skipped every command sent
        meanwhile. Best effort: a broker may refuse a commit from a non-member
        while another member joins, and that member then marks the start.
        """
        tp = TopicPartition(self._topic, self._partition)
        try:
            if consumer.committed([tp], timeout=10.0)[0].offset < 0:
                end = self._transport.end_offset(self._partition)
                consumer.commit(offsets=[TopicPartition(self._topic, self._partition, end)], asynchronous=False)
        except KafkaException as exc:
            log.info("could not mark the start of the command log of %s before joining: %s", self._key, exc)

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._incremental:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignments.append(sorted(tp.partition for tp in partitions))
        if not any(tp.partition == self._partition for tp in partitions):
            self._assign(consumer, [])  # fetch none of the others
            return
        start = self._start_position(consumer)
        self._assign(consumer, [TopicPartition(self._topic, self._partition, start)])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        ours = any(tp.partition == self._partition for tp in partitions)
        if self._owns and ours:
            log.info("command log of %s moved to another process", self._key)
            self._owns = False
        if not self._incremental:
            consumer.unassign()
        else:
            consumer.incremental_unassign([TopicPartition(self._topic, self._partition)] if ours else [])

    def poll(self, timeout: float) -> list[LogEntry]:
        if self._closed or self._consumer is None:
            return []
        return self._read(timeout)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close_consumer()  # leaves the group: another member takes over
