"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from broker import TansuBroker, unique_topic_name


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TansuBroker]:
    """One real broker for the whole session; a failure to start fails the tests, never skips them."""
    broker = TansuBroker().start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest) -> str:
    """A fresh topic name per test: the session broker keeps every topic, and its watermarks can't be trusted."""
    return unique_topic_name(request.node.name)
