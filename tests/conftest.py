"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from broker import TansuBroker, unique_topic_name


def _running_broker() -> Iterator[TansuBroker]:
    broker = TansuBroker().start()
    try:
        yield broker
    finally:
        broker.stop()


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
