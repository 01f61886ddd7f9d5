"""The one table of parameter types: every use of a declared type reads it."""

from __future__ import annotations

import enum
import typing
from typing import Any, Literal

import pytest

from flask_openfactory.api.fields import FIELDS
from flask_openfactory.wire import conversion
from flask_openfactory.wire.methods import ofa_method, spec_of
from flask_openfactory.wire.param_types import Kind, ParamType, param_type


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


@pytest.mark.parametrize(("annotation", "kind", "name", "json"), [
    (None, Kind.ANY, "any", False),
    (Any, Kind.ANY, "any", False),
    (str, Kind.STR, "str", False),
    (int, Kind.INT, "int", False),
    (float, Kind.FLOAT, "float", False),
    (bool, Kind.BOOL, "bool", False),
    (list, Kind.LIST, "list", True),
    (dict, Kind.DICT, "dict", True),
    (list[int | None], Kind.LIST, "list", True),
    (dict[str, float], Kind.DICT, "dict", True),
    (Literal["a", 1, True, None], Kind.LITERAL, "literal['a', 1, True, None]", False),
    (Mode, Kind.ENUM, "Mode", False),
])
def test_each_supported_annotation_has_one_kind_name_and_carrier(annotation: Any, kind: Kind, name: str,
                                                                  json: bool) -> None:
    declared = param_type(annotation)
    assert (declared.kind, declared.name, declared.takes_json, declared.optional) == (kind, name, json, False)
    if annotation is not None:
        optional = param_type(typing.Optional[annotation])  # noqa: UP045  # the typing form, as users write it
        assert (optional.kind, optional.name, optional.optional) == (kind, name, True)


def test_containers_describe_what_they_hold() -> None:
    assert param_type(list[int | None]).items == (ParamType(Kind.INT, optional=True),)
    assert param_type(dict[str, Mode]).items == (ParamType(Kind.STR), ParamType(Kind.ENUM, enum=Mode))
    assert param_type(list).items == (ParamType(Kind.ANY),)


@pytest.mark.parametrize("annotation", [bytes, set[int], tuple[int, int], Literal[1.5], int | str, list[bytes]])
def test_an_unsupported_annotation_is_refused_by_the_table_and_at_declaration(annotation: Any) -> None:
    with pytest.raises(TypeError, match="unsupported annotation"):
        param_type(annotation)

    def method(value: Any) -> None: ...
    method.__annotations__["value"] = annotation
    with pytest.raises(TypeError, match=r"parameter 'value' has annotation .*; supported are str, int"):
        ofa_method()(method)


def test_every_kind_has_a_converter_and_a_json_field() -> None:
    assert set(conversion.CONVERTERS) == set(Kind)
    assert set(FIELDS) == set(Kind)


def test_the_advertised_type_name_comes_from_the_table() -> None:
    @ofa_method()
    def move(x: float, mode: Mode | None = None, points: list[int] | None = None, tag: Literal["a"] = "a") -> None:
        """Move."""

    assert [a["type"] for a in spec_of(move).arguments()] == ["float", "Mode | None", "list | None",
                                                              "literal['a']"]
