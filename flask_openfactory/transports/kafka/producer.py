"""The producer side of ``KafkaTransport``: one producer per process, and back-pressure.

* The producer is created lazily in the process that uses it (one inherited
  through fork is left untouched); asynchronous produce with delivery reports
  served by a poller thread, never a flush per write.
* Back-pressure: a full outgoing queue is waited on for the publish timeout,
  then refused (``TransportBusy``) until a delivery report makes room.
* A producer that can no longer deliver (a fatal error, its idempotence state
  lost to a recreated log, or a queue stuck with no delivery report while the
  broker answers) is replaced; what it held is produced again by its successor.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from ...wire.protocol import COMMAND_SUFFIX, RESULT_SUFFIX, Record
from ..base import KEEP_ALIVE, DeliveryCallback, Health, TransportBusy, TransportError, TransportOptions
from ..pid import THIS_PROCESS
from .client import KafkaClient
from .config import CONNECTION_CODES, PRODUCER_DEFAULTS
from .messages import ORIGIN_HEADER

log = logging.getLogger("flask_openfactory.kafka")

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
_CALL_SUFFIXES = (COMMAND_SUFFIX, RESULT_SUFFIX)  # commands and results carry no attribute header
# At most this many written values wait for the command reader (about 0.7 MB); a reader that far
# behind reads the headers of the rest.
WRITTEN_LIMIT = 4096


class KafkaProducing(KafkaClient):
    """Writes of ``KafkaTransport``: the producer, its poller thread, delivery reports, health."""

    def __init__(self, url: str, options: TransportOptions | None = None) -> None:
        super().__init__(url, options)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._producer: Producer | None = None
        self._poller: threading.Thread | None = None
        self._closing = threading.Event()
        self._last_failure_log = 0.0
        # Successful delivery reports of plain writes: counted, nothing else, in the callback (one per
        # record); the poller notes the progress once per poll.
        self._delivered_ok = 0
        # The delivered count when a write waited the whole publish timeout in vain; any delivery
        # since made room: meanwhile writes fail at once instead of each waiting again.
        self._full_mark: int | None = None
        self._suppressed_failures = 0
        self._last_failure = ""
        self._progress_at = time.monotonic()  # last delivery report, or the queue seen empty
        self._stuck: str | None = None  # why the outgoing queue is considered stuck
        self._requeue: Producer | None = None  # records purged from this producer go to the new one
        self._fatal: str | None = None  # a fatal error seen in a callback, handled after the poll returns
        self._held: list[tuple[Message, Any]] = []  # records the fatal producer failed: for its successor
        self._attribute_headers: list[tuple[str, str | bytes | None]] = [(ORIGIN_HEADER, self.origin)]
        self._keys: dict[str, bytes] = {}  # asset UUID -> its key, encoded

    def producer(self) -> Producer:
        """This process's producer; one inherited through fork is left untouched."""
        with self._lock:
            if self._producer is None or self._pid != os.getpid():
                if self._closing.is_set() and self._pid == os.getpid():  # a late write must not reopen it
                    raise TransportError(f"Kafka at {self.bootstrap}: this process closed its producer; "
                                         f"nothing was queued")
                if self._pid != os.getpid():
                    KEEP_ALIVE.append(self._producer)
                    self._pid, self._closing, self._full_mark = os.getpid(), threading.Event(), None
                    self._lock = threading.Lock()
                    self._requeue, self._stuck, self._fatal = None, None, None
                self._producer = Producer({
                    # a plain write's report: set once here, so that no write passes a callback of its own
                    **self._base(), "on_delivery": self._report, **PRODUCER_DEFAULTS,
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
                try:
                    producer.poll(0.05)
                except KafkaException as exc:  # the old client's fatal error, raised again: keep serving its
                    log.debug("replaced Kafka producer: %s", exc)  # reports, or what it holds is lost
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
        except (BufferError, KafkaException, TransportError) as exc:  # TransportError: closed meanwhile
            self._stats["delivery_failures"] += 1
            log.error("a record of the replaced Kafka producer could not be queued again: %s", exc)
            return False
        return True

    def _serve(self) -> None:
        """Serve delivery reports and watch the broker (a frozen broker sends no error)."""
        producer = self._producer
        next_check = 0.0
        delivered = self._delivered_ok
        while producer is not None and producer is self._producer and not self._closing.is_set():
            try:
                if self._fatal is not None:  # never from inside a callback of the same client
                    reason, self._fatal = self._fatal, None
                    self._recreate(producer, reason)
                    break
                producer.poll(0.1)  # re-raises what a delivery callback raised
                if self._delivered_ok != delivered:  # reports arrived (here or in a flush): the queue moves
                    delivered = self._delivered_ok
                    self._progress_at = time.monotonic()
                    self._stuck = None
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
        if error.code() in CONNECTION_CODES:
            self._health.set(False, f"Kafka at {self.bootstrap}: {error.str()}")
        if error.fatal():
            self._fatal = f"fatal error: {error.str()}"
        else:
            log.debug("Kafka: %s", error.str())

    def _report(self, error: KafkaError | None, message: Message) -> None:
        """Delivery report of a plain write: the producer's default, set in its config (no callback per record).

        Runs once per record while holding the GIL the writing thread wants: a success only
        counts; the poller notes the progress, and ``_queue_full`` sees the room it made.
        """
        if error is None:
            self._delivered_ok += 1
            return
        if self._requeued(error, message, self._report):
            return
        self._delivered(error)

    def _queue_full(self) -> bool:
        mark = self._full_mark
        return mark is not None and mark == self._delivered_ok

    def _delivered(self, error: KafkaError | None) -> None:
        self._full_mark = None  # a record left the queue: there is room again
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
        if record.id.endswith(_CALL_SUFFIXES):
            headers = None
        else:
            headers = self._attribute_headers
            for written in self.written_sets:
                if len(written) >= WRITTEN_LIMIT:
                    written.clear()
                written.add(value)
        key = self._keys.get(record.asset_uuid) or self._key_of(record)

        producer, topic = self._producer, self._topic
        if producer is not None and self._pid == THIS_PROCESS.pid and topic is not None:
            try:  # the hot path: no lock, no property; a plain write's report is the producer's _report
                if on_delivery is None:
                    producer.produce(topic, value, key, headers=headers)
                else:
                    producer.produce(topic, value, key, headers=headers, on_delivery=self._reporter(on_delivery))
                self._stats["published"] += 1
                return
            except BufferError:
                pass
            except KafkaException as exc:
                if not exc.args[0].fatal():
                    raise TransportError(f"Kafka at {self.bootstrap}: {exc.args[0].str()}") from None
                self._recreate(producer, f"fatal error: {exc.args[0].str()}")  # then once more, below
        report: Any = None if on_delivery is None else self._reporter(on_delivery)  # None: the producer's _report
        deadline = time.monotonic() + (0.0 if self._queue_full() else self.options.publish_timeout)
        recreated = False
        while True:
            producer = self.producer()
            try:
                producer.produce(self.topic, value=value, key=key, headers=headers, on_delivery=report)
                self._stats["published"] += 1
                return
            except BufferError:
                self._stats["queue_full"] += 1
                if time.monotonic() >= deadline:
                    self._full_mark = self._delivered_ok
                    self._stats["busy"] += 1
                    raise self._busy(producer) from None
                time.sleep(0.01)  # the poller frees the queue as deliveries complete
            except KafkaException as exc:
                if exc.args[0].fatal() and not recreated:
                    self._recreate(producer, f"fatal error: {exc.args[0].str()}")
                    recreated = True
                    continue
                raise TransportError(f"Kafka at {self.bootstrap}: {exc.args[0].str()}") from None

    def _key_of(self, record: Record) -> bytes:
        """A record's Kafka key, encoded once per asset: every write needs one."""
        if len(self._keys) >= 1024:  # a process writes for its own asset (and the odd one it calls)
            self._keys.clear()
        key = self._keys[record.asset_uuid] = record.key
        return key

    def saturated(self) -> TransportBusy | None:
        producer = self._producer
        return self._busy(producer) if self._queue_full() and producer is not None else None

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

    # -- status ----------------------------------------------------------------------

    def check(self, timeout: float) -> Health:
        try:
            producer = self.producer()
        except (KafkaException, TransportError) as exc:
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
        delivered = self._stats["delivered"] + self._delivered_ok
        return {**self._stats, "delivered": delivered, "pending": pending, "queue_stuck": int(self._stuck is not None),
                "log_lines_held_back": self.quiet.held_back}
