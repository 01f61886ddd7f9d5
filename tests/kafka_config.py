"""Client settings for the test broker (test-broker-notes.md): fast joins, fast death detection, low latency."""

KAFKA_TEST_CONFIG = {
    "consumer.session.timeout.ms": 2000,
    "consumer.heartbeat.interval.ms": 500,
    "consumer.fetch.wait.max.ms": 10,
}
