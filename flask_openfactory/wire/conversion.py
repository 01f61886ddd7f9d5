"""Command arguments to Python values, by the reference's rules (pure).

The platform's reference SDK converts each command argument (always a string)
with pydantic v2 in lax mode: ``TypeAdapter(T).validate_python(text)``. A
migrating app must see the same values here, so these rules reproduce that
behaviour for every type a method may declare; ``tests/test_conversion.py``
checks them against pydantic itself over a generated corpus.

pydantic is deliberately not used at run time (it is a test dependency only):
the rules for the few types a method may declare fit in this module, the
package keeps the dependencies its brief names, and a converter compiled once
per parameter is faster per command than a ``TypeAdapter`` (see
``bench/conversion.py``).

Two deliberate differences, both documented in the README:

* a non-finite float (``inf``, ``nan``, ``1e400``, anywhere, including inside
  a list) is rejected: a machine must not be sent to infinity, and JSON cannot
  carry it;
* ``list[...]`` and ``dict[...]`` parameters take JSON text, whose decoded
  value then follows pydantic's rules exactly (``validate_python`` on the
  decoded value). The reference rejects every string for such a parameter, so
  no command that works there behaves differently here.
"""

from __future__ import annotations

import enum
import functools
import json
import math
import re
from collections.abc import Callable
from typing import Any

from .param_types import Kind, ParamType, param_type

Converter = Callable[[Any], Any]


class ConversionError(ValueError):
    """The value does not fit the declared type; the message says what was expected."""


# What pydantic strips around numbers: Unicode White_Space (Python's str.strip()
# would also strip U+001C..U+001F, which pydantic keeps and then rejects).
_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
         "\u2028\u2029\u202f\u205f\u3000"
_INT_MAX_DIGITS = 4300  # Python's int-from-string limit, which pydantic shares
_I64 = 2**63
_INT = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*", re.ASCII)
_DIGITS = re.compile(r"[0-9]+(?:_[0-9]+)*", re.ASCII)
_LEADING_ZEROS = re.compile(r"([+-]?)0[0_]*(.*)", re.ASCII | re.DOTALL)
_AFTER_ZEROS_MINUS = re.compile(r"_?(?:0|[1-9][0-9]*(?:_[0-9]+)*)", re.ASCII)
# Possessive quantifiers: a long digit string that fails must not backtrack quadratically.
_FLOAT = re.compile(r"[+-]?+(?:(?:[0-9]++(?:\.[0-9]*+)?+|\.[0-9]++)(?:[eE][+-]?+[0-9]++)?+|(?i:inf|infinity|nan))",
                    re.ASCII)
_TRUE = frozenset({"1", "t", "y", "on", "yes", "true"})
_FALSE = frozenset({"0", "f", "n", "no", "off", "false"})


def _int_from_text(text: str) -> int:
    try:
        value = _parse_int(text.strip(_SPACE))
    except ValueError:  # more digits than Python's int-from-string limit (4300)
        raise ConversionError(f"{_show(text)} is not a valid int (more than {_INT_MAX_DIGITS} digits)") from None
    if value is None:
        raise ConversionError(f"{_show(text)} is not a valid int")
    return value


def _parse_int(s: str) -> int | None:
    head, dot, fraction = s.partition(".")
    if dot and fraction and fraction.strip("0") == "":
        s = head  # "5.0", "5.00": whole numbers written as decimals
    if _INT.fullmatch(s):
        return int(s)
    # pydantic also skips leading zeros and underscores, after which a minus
    # sign may still come ("0_-4" is -4): odd, but what the reference accepts.
    zeros = _LEADING_ZEROS.fullmatch(s)
    if zeros is not None:
        sign, rest = zeros.groups()
        if not rest:
            if s[-1] == "0":
                return 0
        elif rest[0] != "-" and _DIGITS.fullmatch(rest):
            value = int(rest)
            return -value if sign == "-" else value
        elif rest[0] == "-" and sign != "-" and _AFTER_ZEROS_MINUS.fullmatch(rest[1:]):
            return -int(rest[1:].replace("_", ""))
    return None


def _float_from_text(text: str) -> float:
    s = text.strip(_SPACE)
    if _FLOAT.fullmatch(s):
        return float(s)
    # Underscores are dropped from the unstripped text: "1_0 " is no float for pydantic.
    joined = text.replace("_", "")
    if "_" in text and text[0] != "_" and text[-1] != "_" and "__" not in text and _FLOAT.fullmatch(joined):
        return float(joined)
    raise ConversionError(f"{_show(text)} is not a valid float")


def to_int(value: Any) -> int:
    kind = type(value)
    if kind is int:
        exact: int = value  # typed by the check above (mypy narrows no type() kept in a variable)
        return exact
    if kind is bool:
        return int(value)
    if kind is str:
        return _int_from_text(value)
    if kind is float:
        if not math.isfinite(value):
            raise ConversionError(f"{value!r} is not a finite number")
        if value % 1:
            raise ConversionError(f"{value!r} is not a whole number")
        if -_I64 < value < _I64:
            return int(value)
        raise ConversionError(f"{value!r} is too large for an int")
    raise ConversionError(f"{_show(value)} is not a valid int")


def to_float(value: Any) -> float:
    kind = type(value)
    number: float
    if kind is float:
        number = value
    elif kind is str:
        number = _float_from_text(value)
    elif kind in (int, bool):
        try:
            number = float(value)
        except OverflowError:
            raise ConversionError(f"{_show(value)} is too large for a float") from None
    else:
        raise ConversionError(f"{_show(value)} is not a valid float")
    if not math.isfinite(number):
        raise ConversionError(f"{_show(value)} is not a finite float (inf and nan are refused)")
    return number


def to_bool(value: Any) -> bool:
    kind = type(value)
    if kind is bool:
        exact: bool = value  # typed by the check above
        return exact
    if kind is str and value.isascii():
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    elif kind in (int, float) and value in (0, 1):
        one: bool = value == 1
        return one
    raise ConversionError(f"{_show(value)} is not a valid bool (true/false, 1/0, yes/no, on/off, t/f, y/n)")


def to_str(value: Any) -> str:
    if type(value) is str:
        return value
    raise ConversionError(f"{_show(value)} is not a string")


def _any(value: Any) -> Any:
    return value


def _literal(choices: tuple[Any, ...]) -> Converter:
    exact = {(type(c), c): c for c in choices if type(c) in (str, int, bool)}
    by_value: dict[Any, Any] = {}
    for choice in choices:
        by_value[choice] = choice  # equal choices (1, True): the key stays, the last value wins
    expected = " or ".join(repr(c) for c in choices)

    def convert(value: Any) -> Any:
        try:
            return exact[(type(value), value)]
        except (KeyError, TypeError):
            pass
        try:
            return by_value[value]
        except (KeyError, TypeError):
            raise ConversionError(f"{_show(value)} is not one of {expected}") from None

    return convert


def _enum(cls: type[enum.Enum]) -> Converter:
    members = {m.value: m for m in cls}
    expected = " or ".join(repr(v) for v in members)
    base = next((b for b in (int, float, str) if issubclass(cls, b)), None)
    first: Converter = {int: to_int, float: to_float, str: to_str}.get(base, _any)  # type: ignore[arg-type]  # None: _any

    def convert(value: Any) -> Any:
        try:
            return members[first(value)]
        except (ConversionError, KeyError, TypeError):
            raise ConversionError(f"{_show(value)} is not a {cls.__name__} ({expected})") from None

    return convert


def _optional(inner: Converter) -> Converter:
    def convert(value: Any) -> Any:
        return None if value is None else inner(value)

    return convert


def _list(item: Converter) -> Converter:
    def convert(value: Any) -> list[Any]:
        if type(value) is not list:
            raise ConversionError(f"{_show(value)} is not a list")
        converted = []
        for index, element in enumerate(value):
            try:
                converted.append(item(element))
            except ConversionError as exc:
                raise ConversionError(f"item {index}: {exc}") from None
        return converted

    return convert


def _dict(key: Converter, item: Converter) -> Converter:
    def convert(value: Any) -> dict[Any, Any]:
        if type(value) is not dict:
            raise ConversionError(f"{_show(value)} is not an object")
        converted = {}
        for k, v in value.items():
            try:
                converted[key(k)] = item(v)
            except ConversionError as exc:
                raise ConversionError(f"key {_show(k)}: {exc}") from None
        return converted

    return convert


def _enum_class(declared: ParamType) -> type[enum.Enum]:
    assert declared.enum is not None  # an ENUM ParamType always carries its class
    return declared.enum


@functools.cache
def _converter(declared: ParamType) -> Converter:
    convert = CONVERTERS[declared.kind](declared)
    return _optional(convert) if declared.optional else convert


# How each kind of parameter converts (tests/test_param_types.py checks that every kind is here).
CONVERTERS: dict[Kind, Callable[[ParamType], Converter]] = {
    Kind.ANY: lambda t: _any,
    Kind.STR: lambda t: to_str,
    Kind.INT: lambda t: to_int,
    Kind.FLOAT: lambda t: to_float,
    Kind.BOOL: lambda t: to_bool,
    Kind.LIST: lambda t: _list(_converter(t.items[0])),
    Kind.DICT: lambda t: _dict(_converter(t.items[0]), _converter(t.items[1])),
    Kind.LITERAL: lambda t: _literal(t.choices),
    Kind.ENUM: lambda t: _enum(_enum_class(t)),
}


def value_converter(annotation: Any) -> Converter:
    """A decoded value (string or JSON) to ``annotation``, or ConversionError.

    Raises TypeError for an annotation a method may not declare.
    """
    return _converter(param_type(annotation))


def takes_json(annotation: Any) -> bool:
    """Whether a command carries this parameter as JSON text (containers only)."""
    return param_type(annotation).takes_json


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is not a finite number")
    return number


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def decode_json(text: str) -> Any:
    """JSON text, refusing NaN, Infinity, numbers too large for a float and nesting past MAX_JSON_DEPTH."""
    try:
        value = json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting past the decoder's limit
        raise ConversionError(f"{_show(text)} is not valid JSON ({exc})") from None
    if _nested_deeper_than(value, MAX_JSON_DEPTH):
        raise ConversionError(f"{_show(text)} is nested more than {MAX_JSON_DEPTH} levels deep")
    return value


# The same bound on every Python: 3.13's JSON decoder nests far deeper than 3.11's before a RecursionError.
MAX_JSON_DEPTH = 500


def _nested_deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
    return False


@functools.cache
def text_converter(annotation: Any) -> Converter:
    """A command argument (a string) to ``annotation``, as the reference converts it."""
    convert = value_converter(annotation)
    if not takes_json(annotation):
        return convert

    def from_json(text: str) -> Any:
        return convert(decode_json(text))

    return from_json


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
