"""The marshmallow field for each parameter annotation ``ofa_method`` accepts, and a method's body schema.

JSON is typed on the method routes: ``"1"`` is not an int, ``1`` is a valid float.
"""

from __future__ import annotations

import enum
import typing
from collections.abc import Mapping
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from ..methods import MethodSpec, Parameter, json_default


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


def _scalar_field(annotation: Any, **kwargs: Any) -> fields.Field[Any] | None:
    """The field of a plain type, or None when the type is not a plain one."""
    if annotation is bool:
        return _StrictBoolean(**kwargs)
    if annotation is int:
        return fields.Integer(strict=True, **kwargs)
    if annotation is float:
        return _StrictFloat(allow_nan=False, **kwargs)
    if annotation is str:
        return fields.String(**kwargs)
    return None


def _field(annotation: Any, **kwargs: Any) -> fields.Field[Any]:
    """marshmallow field for one parameter annotation (the set ``ofa_method`` accepts)."""
    if annotation is None or annotation is Any:
        kwargs["allow_none"] = True
        return fields.Raw(**kwargs)
    scalar = _scalar_field(annotation, **kwargs)
    if scalar is not None:
        return scalar
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is list or origin is list:
        inner = (_scalar_field(args[0]) if args else None) or fields.Raw(allow_none=True)
        return fields.List(inner, **kwargs)
    if annotation is dict or origin is dict:
        values = (_scalar_field(args[1]) if len(args) == 2 else None) or fields.Raw(allow_none=True)
        return fields.Dict(keys=fields.String(), values=values, **kwargs)
    if origin is typing.Literal:
        choices = list(args)
        kwargs["validate"] = validate.OneOf(choices)
        if all(isinstance(c, str) for c in choices):
            return fields.String(**kwargs)
        if all(isinstance(c, int) and not isinstance(c, bool) for c in choices):
            return fields.Integer(strict=True, **kwargs)
        return fields.Raw(**kwargs)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return fields.Enum(annotation, by_value=True, **kwargs)
    raise TypeError(f"no JSON schema for annotation {annotation!r}")


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
    return _field(p.annotation, **kwargs)


def arguments_schema(spec: MethodSpec, name: str) -> type[ma.Schema]:
    """The JSON body schema of one method; unknown fields raise (marshmallow's default)."""
    return ma.Schema.from_dict({p.name: _parameter_field(p) for p in spec.parameters}, name=name)
