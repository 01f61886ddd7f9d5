"""The least an HTTP call through the log can cost here: a hand-written app, for the benchmark's floor.

``POST /raw/ping`` does what the extension's method route must do, and nothing
else: write the command to the asset's partition, wait for its result, answer
with it. Each worker tails the partition with one consumer (the extension's
executing worker has two); the worker holding the lock file executes: it
answers each command with a result record and commits its position. Same
broker, client settings and producer settings as the extension's app; no
validation, no signatures, no duplicate suppression, no state, no recovery.
gunicorn loads it as ``harness.raw_call:raw_call_app()`` with ``ext_env``'s
environment.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from flask import Flask, abort, jsonify
from flask.typing import ResponseReturnValue

from flask_openfactory.transports.kafka.config import CONSUMER_DEFAULTS, PRODUCER_DEFAULTS, split_config
from flask_openfactory.transports.kafka.messages import fetch
from flask_openfactory.transports.partitioning import partition_for_key

from .apps import user_blueprint
from .kafka_settings import KAFKA_LOG

__all__ = ["RAW_CALL_ROUTE", "raw_call_app"]

RAW_CALL_ROUTE = "/raw/ping"
PARTITIONS = 8  # the bench's topics


class _Calls:
    """One worker's clients, started on its first call (after gunicorn's fork)."""

    def __init__(self, bootstrap: str, topic: str, key: str, lock_path: str) -> None:
        self._bootstrap, self._topic, self._key = bootstrap, topic, key.encode("utf-8")
        self._lock_path = lock_path
        self._started = False
        self._start_lock = threading.Lock()
        self._waiting: dict[str, tuple[threading.Event, list[bytes]]] = {}
        self._producer: Producer | None = None

    def _start(self) -> None:
        producer_config, consumer_config = split_config(json.loads(os.environ["FLASK_OPENFACTORY_KAFKA_CONFIG"]))
        base = {"bootstrap.servers": self._bootstrap, "logger": KAFKA_LOG}
        settings = {k: v for k, v in PRODUCER_DEFAULTS.items() if k != "allow.auto.create.topics"}
        self._producer = Producer({**base, **settings, **producer_config})
        consumer = Consumer({**base, **CONSUMER_DEFAULTS, **consumer_config, "group.id": "raw-call"})
        tp = TopicPartition(self._topic, partition_for_key(self._key, PARTITIONS))
        _, high = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        consumer.assign([TopicPartition(tp.topic, tp.partition, max(high, 0))])
        lock = open(self._lock_path, "a")  # held (never closed) for the worker's life: the executor's lock
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            executes = True
        except OSError:
            executes = False
        threading.Thread(target=self._serve, daemon=True).start()
        threading.Thread(target=self._read, args=(consumer, tp, executes, lock), daemon=True).start()

    def _serve(self) -> None:
        assert self._producer is not None
        while True:
            self._producer.poll(0.1)

    def _read(self, consumer: Consumer, tp: TopicPartition, executes: bool, lock: Any) -> None:
        assert self._producer is not None
        while True:
            answered = -1
            for message in fetch(consumer, 0.2):
                value = message.value()
                if message.error() is not None or message.key() != self._key or not value:
                    continue
                record = json.loads(value)
                if record["ID"] == "ping_CMD" and executes:
                    result = json.dumps({"ID": "ping_RESULT", "VALUE": {"correlation_id": record["VALUE"],
                                                                        "status": "OK", "result": "pong"}})
                    self._producer.produce(self._topic, key=self._key, value=result.encode("utf-8"))
                    answered = message.offset() or 0
                elif record["ID"] == "ping_RESULT":
                    waiting = self._waiting.get(record["VALUE"]["correlation_id"])
                    if waiting is not None:
                        waiting[1].append(value)
                        waiting[0].set()
            if answered >= 0:
                consumer.commit(offsets=[TopicPartition(self._topic, tp.partition, answered + 1)], asynchronous=True)

    def ensure_started(self) -> None:
        if not self._started:
            with self._start_lock:
                if not self._started:
                    self._start()
                    self._started = True

    def call(self, timeout: float) -> bytes | None:
        self.ensure_started()
        assert self._producer is not None
        cid = uuid.uuid4().hex
        waiting: tuple[threading.Event, list[bytes]] = (threading.Event(), [])
        self._waiting[cid] = waiting
        try:
            command = json.dumps({"ID": "ping_CMD", "VALUE": cid}).encode("utf-8")
            self._producer.produce(self._topic, key=self._key, value=command)
            return waiting[1][0] if waiting[0].wait(timeout) else None
        finally:
            del self._waiting[cid]


def raw_call_app(follow_at_boot: bool = False) -> Flask:
    """A plain Flask app (same user route and ``SECRET_KEY`` as ``plain_app``) with the hand-written call.

    ``follow_at_boot``: each worker starts its clients when it loads the app (gunicorn
    loads it in every worker: no ``--preload``), as the extension's workers follow their
    log from boot; the user-route floor serves with them at rest.
    """
    app = Flask(__name__)
    app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY")
    app.register_blueprint(user_blueprint())
    calls = _Calls(os.environ["KAFKA_BROKER"], os.environ["FLASK_OPENFACTORY_ASSETS_TOPIC"],
                   os.environ["APP_UUID"], os.path.join(os.environ["FLASK_OPENFACTORY_LOCK_DIR"], "raw-call.lock"))

    @app.post(RAW_CALL_ROUTE)
    def ping() -> ResponseReturnValue:
        answer = calls.call(timeout=10.0)
        if answer is None:
            abort(504)
        return jsonify(json.loads(answer)["VALUE"])

    if follow_at_boot:
        calls.ensure_started()
    return app
