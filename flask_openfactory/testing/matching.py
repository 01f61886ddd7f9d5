"""What the tester's assertions compare: ``ANY``, predicates, and how a record is shown.

Shared by the records view (``assert_published``) and the tester that
forwards to it; kept apart so both read the same rules.
"""

from __future__ import annotations

from typing import Any

from ..wire.protocol import Record

__all__ = ["ANY", "describe", "same", "wanted"]


class _Any:
    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()  # "any value" in assertions (None is a value an attribute may have)


def same(expected: Any, actual: Any) -> bool:
    if expected is ANY:
        return True
    if callable(expected):
        return bool(expected(actual))
    if isinstance(expected, bool) or isinstance(actual, bool):  # True is not 1 on the wire
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    return bool(expected == actual)


def describe(record: Record) -> str:
    return f"{record.value!r}  (type {record.type}, tag {record.tag!r}, at {record.timestamp})"


def wanted(value: Any, type: str | None, tag: str | None) -> str:
    parts = [] if value is ANY else [f"value={value!r}"]
    if type is not None:
        parts.append(f"type={type!r}")
    if tag is not None:
        parts.append(f"tag={tag!r}")
    return ", ".join(parts) or "any value"
