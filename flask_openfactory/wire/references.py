"""The asset graph on the wire: ``references_above`` / ``references_below`` (pure).

Each is an attribute of TYPE ``OpenFactory``, TAG ``AssetsReferences``, whose
VALUE lists asset UUIDs joined by ``", "``; readers split on ``,`` and strip.
The reference adds a reference by writing ``"<new>, <old>"`` (newest first).
"""

from __future__ import annotations

from typing import Any, Literal

from .protocol import OPENFACTORY, Record, validate_identifier

REFERENCES_TAG = "AssetsReferences"
Direction = Literal["above", "below"]


def references_id(direction: Direction) -> str:
    if direction not in ("above", "below"):
        raise ValueError(f"direction must be 'above' or 'below', got {direction!r}")
    return f"references_{direction}"


def parse_references(value: Any) -> list[str]:
    """The UUIDs in a references VALUE, in order; empty or missing is no reference."""
    if not isinstance(value, str):
        return []
    return [part.strip() for part in value.split(",") if part.strip()]


def added_reference(asset_uuid: str, direction: Direction, current: Any, new: str) -> Record | None:
    """The record that adds ``new`` first, as the reference writes it; None when it is there already
    (the reference would list it twice)."""
    validate_identifier("referenced asset UUID", new)
    existing = parse_references(current)
    if new in existing:
        return None
    return Record.create(asset_uuid, references_id(direction), ", ".join([new, *existing]),
                         tag=REFERENCES_TAG, type=OPENFACTORY)
