"""Rendering for the terminal: JSON dumps, aligned tables, attribute rows, method signatures."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..wire.methods import MethodSpec
from ..wire.protocol import Record

_MAX_CELL = 60


def dump(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str)


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "") -> list[str]:
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return (indent + "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=False))).rstrip()

    return [line(headers)] + [line(r) for r in cells]


ATTRIBUTE_HEADERS = ("ID", "VALUE", "TAG", "TYPE", "TIMESTAMP")


def attribute_rows(records: Sequence[Record]) -> list[list[Any]]:
    return [[r.id, r.value, r.tag, r.type, r.timestamp] for r in records]


def method_info(spec: MethodSpec) -> dict[str, Any]:
    """The advertisement's arguments (JSON-safe defaults) plus the Python signature."""
    advertised = json.loads(spec.advertisement())
    return {
        "name": spec.name,
        "signature": spec.signature_text(),
        "description": spec.description,
        "arguments": advertised["arguments"],
    }


def method_lines(spec: MethodSpec, indent: str = "") -> list[str]:
    lines = [indent + spec.signature_text()]
    if spec.description:
        lines += [indent + "    " + text for text in spec.description.splitlines()]
    for p in spec.parameters:
        extra = "required" if p.required else f"default {p.default!r}"
        described = f": {p.description}" if p.description else ""
        lines.append(f"{indent}    - {p.name} ({p.type_name}, {extra}){described}")
    return lines
