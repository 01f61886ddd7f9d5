"""The parameter types a method may declare, read once into one table (pure).

A parameter's annotation becomes a ``ParamType``. Everything that depends on
the type reads that value instead of walking the annotation again: the
advertisement's type name, the supported-type check at declaration, the
command conversion (``conversion.py``) and the HTTP body schema (``api``).
Supporting a new type means one more ``Kind`` and one entry in each table
keyed by it (``tests/test_param_types.py`` checks that every table has them all).
"""

from __future__ import annotations

import enum
import functools
import types
import typing
from dataclasses import dataclass
from typing import Any


class Kind(enum.Enum):
    ANY = "any"
    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    LIST = "list"
    DICT = "dict"
    LITERAL = "literal"
    ENUM = "enum"


SCALARS = {str: Kind.STR, int: Kind.INT, float: Kind.FLOAT, bool: Kind.BOOL}
CONTAINERS = frozenset({Kind.LIST, Kind.DICT})  # carried in a command as JSON text
LITERAL_CHOICE_TYPES = (str, int, bool, type(None))

SUPPORTED_TEXT = (
    "supported are str, int, float, bool, Literal (of str, int, bool), Enum, list[...] and "
    "dict[...] of these, their Optional forms, Any or no annotation"
)


@dataclass(frozen=True, slots=True)
class ParamType:
    """One declared type: its kind, whether ``None`` is allowed, and what it is made of."""

    kind: Kind
    optional: bool = False
    items: tuple[ParamType, ...] = ()  # list: (item,); dict: (key, value)
    choices: tuple[Any, ...] = ()  # Literal
    enum: type[enum.Enum] | None = None  # Enum

    @property
    def name(self) -> str:
        """The advertised type name (``| None`` is added by the parameter, which knows it is optional)."""
        if self.kind is Kind.LITERAL:
            return "literal[" + ", ".join(repr(c) for c in self.choices) + "]"
        if self.kind is Kind.ENUM:
            assert self.enum is not None
            return self.enum.__name__
        return str(self.kind.value)

    @property
    def takes_json(self) -> bool:
        return self.kind in CONTAINERS

    @property
    def plain(self) -> bool:
        """A scalar that does not allow ``None``."""
        return self.kind in _SCALAR_KINDS and not self.optional


_SCALAR_KINDS = frozenset(SCALARS.values())
_ANY = ParamType(Kind.ANY)


def split_optional(annotation: Any) -> tuple[Any, bool]:
    """``T | None`` as (T, True); anything else as (annotation, False)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return rest[0], True
    return annotation, False


@functools.cache
def param_type(annotation: Any) -> ParamType:
    """The type a parameter declares, or TypeError for one a method may not declare."""
    if annotation is None or annotation is Any:
        return _ANY
    base, optional = split_optional(annotation)
    if optional:
        inner = param_type(base)
        return ParamType(inner.kind, True, inner.items, inner.choices, inner.enum)
    if base is list:
        return ParamType(Kind.LIST, items=(_ANY,))
    if base is dict:
        return ParamType(Kind.DICT, items=(_ANY, _ANY))
    scalar = SCALARS.get(base) if isinstance(base, type) else None
    if scalar is not None:
        return ParamType(scalar)
    origin, args = typing.get_origin(base), typing.get_args(base)
    if origin is typing.Literal and all(type(a) in LITERAL_CHOICE_TYPES for a in args):
        return ParamType(Kind.LITERAL, choices=args)
    if origin is list and len(args) == 1:
        return ParamType(Kind.LIST, items=(param_type(args[0]),))
    if origin is dict and len(args) == 2:
        return ParamType(Kind.DICT, items=(param_type(args[0]), param_type(args[1])))
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return ParamType(Kind.ENUM, enum=base)
    raise TypeError(f"unsupported annotation {annotation!r}")
