"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.broker import TansuBroker, unique_topic_name
from harness.gunicorn_server import ServerPool
from probe_apps import TESTS


def _running_broker() -> Iterator[TansuBroker]:
    broker = TansuBroker().start()
    try:
        yield broker
    finally:
        broker.stop()


BROKER_FIXTURES = frozenset({"kafka_broker", "own_broker"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``broker`` every test that uses a real broker: through a fixture, or as the "kafka"
    case of a fixture parametrized over transports (which asks for the broker only then)."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        kafka_case = any(isinstance(value, str) and value == "kafka" for value in params.values())
        if kafka_case or BROKER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.broker)


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TansuBroker]:
    """One real broker for the whole session; a failure to start fails the tests, never skips them."""
    yield from _running_broker()


@pytest.fixture
def own_broker() -> Iterator[TansuBroker]:
    """A broker of one test only: freezing or loading it for minutes must not touch the session's."""
    yield from _running_broker()


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest) -> str:
    """A fresh topic name per test: the session broker keeps every topic, and its watermarks can't be trusted."""
    return unique_topic_name(request.node.name)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[ServerPool]:
    """The gunicorn servers a test starts, stopped at teardown (their log tails shown when it failed)."""
    pool = ServerPool(tmp_path, pythonpath=TESTS)
    yield pool
    pool.close()
