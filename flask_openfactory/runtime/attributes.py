"""Declared attributes: an ID, a TAG and a default, read and set in an app context.

A declaration holds no value itself: the value lives in the current app's
runtime, so one module-level declaration serves every app and every worker.
Declarations import neither Flask nor the runtime: they reach the current
runtime through ``current.runtime_lookup``, which the Flask glue installs.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from ..wire.protocol import (
    COMMAND_SUFFIX,
    CONDITION,
    CONDITION_LEVELS,
    EVENTS,
    OPENFACTORY,
    RESULT_SUFFIX,
    SAMPLES,
    UNAVAILABLE,
    JSONScalar,
    Record,
    check_value,
    validate_identifier,
)
from .current import runtime_lookup


class Attribute:
    """Base of the declarations; the subclass fixes the record TYPE."""

    type: ClassVar[str] = EVENTS

    def __init__(self, id: str, *, tag: str, default: Any = UNAVAILABLE) -> None:
        self.id = validate_identifier("attribute ID", id)
        if id.endswith((COMMAND_SUFFIX, RESULT_SUFFIX)):
            raise ValueError(f"attribute ID {id!r} is reserved for commands and results")
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"attribute {id!r}: tag must be a non-empty string")
        self.tag = tag
        self.default = self.check(default)

    def check(self, value: Any) -> JSONScalar:
        """Validate a value for this attribute; raises ValueError with the ID in it."""
        try:
            return check_value(value)
        except ValueError as exc:
            raise ValueError(f"attribute {self.id!r}: {exc}") from None

    def check_tag(self, tag: str | None) -> str:
        if tag is None or tag == self.tag:
            return self.tag
        raise ValueError(f"attribute {self.id!r} has the fixed tag {self.tag!r}")

    @property
    def record(self) -> Record | None:
        """The current record in the current app (None before any value is known)."""
        return runtime_lookup.find().get(self.id)

    @property
    def value(self) -> JSONScalar:
        record = self.record
        return self.default if record is None else record.value

    def set(self, value: Any) -> Record:
        """Set and publish, stamped now; visible to every worker within a second."""
        return runtime_lookup.find().set(self.id, value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r}, tag={self.tag!r}, default={self.default!r})"


class EventAttribute(Attribute):
    """Discrete states and text (``Events``)."""

    type = EVENTS


class SampleAttribute(Attribute):
    """Numeric measurements (``Samples``); the placeholder ``UNAVAILABLE`` is allowed."""

    type = SAMPLES

    def check(self, value: Any) -> JSONScalar:
        if value == UNAVAILABLE or value is None:
            return value  # type: ignore[no-any-return]  # UNAVAILABLE or None: a scalar
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(
                f"sample attribute {self.id!r} takes a number, got {type(value).__name__} {value!r}"
            )
        if not math.isfinite(value):
            raise ValueError(f"sample attribute {self.id!r}: {value!r} is not a finite number")
        return value


class ConditionAttribute(Attribute):
    """Alarm states (``Condition``): the TAG carries the level (Normal, Warning, Fault)."""

    type = CONDITION

    def __init__(self, id: str, *, tag: str = "Normal", default: Any = UNAVAILABLE) -> None:
        super().__init__(id, tag=tag, default=default)
        self.check_tag(tag)

    def check_tag(self, tag: str | None) -> str:
        if tag is None:
            return self.tag
        if tag not in CONDITION_LEVELS:
            raise ValueError(
                f"condition {self.id!r}: level must be one of {', '.join(CONDITION_LEVELS)}, got {tag!r}"
            )
        return tag

    def set(self, value: Any, level: str | None = None) -> Record:
        return runtime_lookup.find().set(self.id, value, tag=level)


class PlatformAttribute(Attribute):
    """Bookkeeping records (``OpenFactory`` TYPE), e.g. ``AssetType``."""

    type = OPENFACTORY
