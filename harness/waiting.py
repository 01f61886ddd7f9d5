"""Waiting on a condition with a timeout: the one replacement for sleeps in the tests and the harness."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T | None], timeout: float = 5.0, what: str | None = None, interval: float = 0.01
) -> T:
    """The first truthy value of ``predicate``; fails naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            name = what or f"condition {getattr(predicate, '__name__', predicate)}"
            raise AssertionError(f"{name}: not met within {timeout:g} s")
        if interval:
            time.sleep(interval)
