"""The marshmallow field of each parameter type ``ofa_method`` accepts, and a method's body schema.

JSON is typed on the method routes: ``"1"`` is not an int, ``1`` is a valid float.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from ..wire.methods import MethodSpec, Parameter, json_default
from ..wire.param_types import Kind, ParamType


class _StrictFloat(fields.Float):
    """JSON numbers only: ``1`` is a valid float, ``"1"`` is not (typed JSON)."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Any:
        if isinstance(value, (str, bytes)):
            raise self.make_error("invalid", input=value)
        return super()._deserialize(value, attr, data, **kwargs)


class _StrictBoolean(fields.Boolean):
    """JSON ``true``/``false`` only (marshmallow also takes "yes", 1, "on"...)."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> Any:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def _enum_class(declared: ParamType) -> type[enum.Enum]:
    assert declared.enum is not None  # an ENUM ParamType always carries its class
    return declared.enum


# The field of each plain type (a scalar that does not allow None).
_SCALAR_FIELDS: dict[Kind, Callable[..., fields.Field[Any]]] = {
    Kind.BOOL: _StrictBoolean,
    Kind.INT: lambda **kwargs: fields.Integer(strict=True, **kwargs),
    Kind.FLOAT: lambda **kwargs: _StrictFloat(allow_nan=False, **kwargs),
    Kind.STR: fields.String,
}


def _item_field(declared: ParamType) -> fields.Field[Any]:
    """What a list or dict holds: typed when plain, anything JSON otherwise."""
    return _SCALAR_FIELDS[declared.kind]() if declared.plain else fields.Raw(allow_none=True)


def _literal_field(declared: ParamType, kwargs: dict[str, Any]) -> fields.Field[Any]:
    choices = list(declared.choices)
    kwargs["validate"] = validate.OneOf(choices)
    if all(isinstance(c, str) for c in choices):
        return fields.String(**kwargs)
    if all(isinstance(c, int) and not isinstance(c, bool) for c in choices):
        return fields.Integer(strict=True, **kwargs)
    return fields.Raw(**kwargs)


# The marshmallow field of each kind of parameter (tests/test_param_types.py checks that every kind is here).
FIELDS: dict[Kind, Callable[[ParamType, dict[str, Any]], fields.Field[Any]]] = {
    Kind.ANY: lambda declared, kwargs: fields.Raw(**{**kwargs, "allow_none": True}),
    Kind.STR: lambda declared, kwargs: _SCALAR_FIELDS[Kind.STR](**kwargs),
    Kind.INT: lambda declared, kwargs: _SCALAR_FIELDS[Kind.INT](**kwargs),
    Kind.FLOAT: lambda declared, kwargs: _SCALAR_FIELDS[Kind.FLOAT](**kwargs),
    Kind.BOOL: lambda declared, kwargs: _SCALAR_FIELDS[Kind.BOOL](**kwargs),
    Kind.LIST: lambda declared, kwargs: fields.List(_item_field(declared.items[0]), **kwargs),
    Kind.DICT: lambda declared, kwargs: fields.Dict(keys=fields.String(), values=_item_field(declared.items[1]),
                                                    **kwargs),
    Kind.LITERAL: _literal_field,
    Kind.ENUM: lambda declared, kwargs: fields.Enum(_enum_class(declared), by_value=True, **kwargs),
}


def _parameter_field(p: Parameter) -> fields.Field[Any]:
    kwargs: dict[str, Any] = {}
    metadata: dict[str, Any] = {}
    if p.description:
        metadata["description"] = p.description
    if p.optional:
        kwargs["allow_none"] = True
    if p.required:
        kwargs["required"] = True
    else:
        default = p.default
        # marshmallow calls a callable load_default: keep the object itself
        kwargs["load_default"] = (lambda d=default: d) if callable(default) else default
        metadata["default"] = json_default(default)  # apispec reads metadata["default"] first
    if metadata:
        kwargs["metadata"] = metadata
    declared = p.declared
    return FIELDS[declared.kind](declared, kwargs)


def arguments_schema(spec: MethodSpec, name: str) -> type[ma.Schema]:
    """The JSON body schema of one method; unknown fields raise (marshmallow's default)."""
    return ma.Schema.from_dict({p.name: _parameter_field(p) for p in spec.parameters}, name=name)
