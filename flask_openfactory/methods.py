"""``ofa_method``: what a method's signature promises to other assets (pure).

The decorator reads the signature once, at declaration, so that the
advertisement, command dispatch and the HTTP schema all come from one source.
"""

from __future__ import annotations

import enum
import inspect
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from .commands import json_safe
from .protocol import validate_identifier

F = TypeVar("F", bound=Callable[..., Any])

SPEC_ATTRIBUTE = "__ofa_method__"

_INT = re.compile(r"^[+-]?\d+$")
_TRUE = {"true", "1", "yes", "on", "t", "y"}
_FALSE = {"false", "0", "no", "off", "f", "n"}


class ArgumentError(ValueError):
    """Arguments that do not fit the method's signature; the command is REJECTED."""


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    annotation: Any  # the bare type, ``Annotated`` stripped; ``None`` when unannotated
    optional: bool  # ``T | None``
    required: bool
    default: Any
    description: str

    @property
    def type_name(self) -> str:
        name = _type_name(self.annotation)
        return f"{name} | None" if self.optional else name

    def convert(self, text: str) -> Any:
        """Lax conversion of the contract's string arguments to the annotated type."""
        if self.optional and text.strip().lower() in ("", "null", "none"):
            return None
        return _convert(self.annotation, text, self.name)


@dataclass(frozen=True, slots=True)
class MethodSpec:
    name: str
    func: Callable[..., Any]
    description: str
    parameters: tuple[Parameter, ...]

    def arguments(self) -> list[dict[str, Any]]:
        """Each parameter's contract: the platform's name and description, plus ours."""
        return [
            {
                "name": p.name,
                "description": p.description,
                "type": p.type_name,
                "required": p.required,
                "default": None if p.required else json_default(p.default),
            }
            for p in self.parameters
        ]

    def advertisement(self) -> str:
        """The Method attribute's VALUE: a JSON string, extra keys are ours."""
        return json.dumps({"description": self.description, "arguments": self.arguments()})

    def signature_text(self) -> str:
        parts = []
        for p in self.parameters:
            text = f"{p.name}: {p.type_name}"
            if not p.required:
                text += f" = {p.default!r}"
            parts.append(text)
        return f"{self.name}({', '.join(parts)})"

    def convert_arguments(self, raw: dict[str, str]) -> dict[str, Any]:
        """Command arguments (strings) to keyword arguments, or ArgumentError."""
        known = {p.name: p for p in self.parameters}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ArgumentError(
                f"unknown argument(s) {', '.join(unknown)} for {self.signature_text()}"
            )
        kwargs: dict[str, Any] = {}
        for p in self.parameters:
            if p.name in raw:
                kwargs[p.name] = p.convert(raw[p.name])
            elif p.required:
                raise ArgumentError(f"missing required argument {p.name!r} for {self.signature_text()}")
        return kwargs


def json_default(value: Any) -> Any:
    """A default as JSON: enum members by value, anything unserialisable as repr."""
    return json_safe(value.value if isinstance(value, enum.Enum) else value)


def _type_name(annotation: Any) -> str:
    if annotation is None or annotation is Any:
        return "any"
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "literal[" + ", ".join(repr(a) for a in typing.get_args(annotation)) + "]"
    if origin in (list, dict):
        return origin.__name__
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def _convert(annotation: Any, text: str, name: str) -> Any:
    def fail(expected: str) -> ArgumentError:
        return ArgumentError(f"argument {name!r}: {text!r} is not a valid {expected}")

    if annotation is None or annotation is Any or annotation is str:
        return text
    stripped = text.strip()
    if annotation is bool:
        lowered = stripped.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise fail("bool (true/false, 1/0, yes/no, on/off)")
    if annotation is int:
        if not _INT.match(stripped):
            raise fail("int")
        try:
            return int(stripped)
        except ValueError:  # more digits than Python's int-string limit (4300)
            raise fail("int") from None
    if annotation is float:
        try:
            number = float(stripped)
        except ValueError:
            raise fail("float") from None
        if not math.isfinite(number):
            raise fail("finite float")
        return number
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        for choice in typing.get_args(annotation):
            if str(choice) == stripped:
                return choice
        raise fail("choice of " + ", ".join(repr(c) for c in typing.get_args(annotation)))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        for member in annotation:
            if stripped in (member.name, str(member.value)):
                return member
        raise fail(f"{annotation.__name__} (one of {', '.join(m.name for m in annotation)})")
    if annotation in (list, dict) or origin in (list, dict):
        container = origin or annotation
        try:
            value = json.loads(stripped)
        except (ValueError, RecursionError):  # RecursionError: nesting past the decoder's limit
            raise fail(f"JSON {container.__name__}") from None
        if not isinstance(value, container) or _nested_deeper_than(value, MAX_JSON_DEPTH):
            raise fail(f"JSON {container.__name__}" + (f" (at most {MAX_JSON_DEPTH} levels deep)"
                                                       if isinstance(value, container) else ""))
        return value
    raise ArgumentError(f"argument {name!r}: unsupported annotation {annotation!r}")


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


_SUPPORTED = (str, int, float, bool, list, dict)


def _unwrap(annotation: Any) -> tuple[Any, bool, str]:
    """Strip ``Annotated`` and ``Optional``; return (type, optional, description)."""
    description = ""
    if typing.get_origin(annotation) is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        description = next((m for m in metadata if isinstance(m, str)), "")
        annotation = base
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            optional, annotation = True, args[0]
    return annotation, optional, description


def _check_supported(func_name: str, name: str, annotation: Any) -> None:
    if annotation is None or annotation is Any or annotation in _SUPPORTED:
        return
    origin = typing.get_origin(annotation)
    if origin is typing.Literal or origin in (list, dict):
        return
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return
    raise TypeError(
        f"ofa_method {func_name}: parameter {name!r} has annotation {annotation!r}; "
        "supported are str, int, float, bool, list, dict, Literal, Enum, their Optional forms, "
        "Any or no annotation"
    )


def build_spec(
    func: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    param_description: dict[str, str] | None = None,
) -> MethodSpec:
    method_name = validate_identifier("method name", name or func.__name__)
    param_description = dict(param_description or {})
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:  # unresolvable forward references
        raise TypeError(f"ofa_method {method_name}: cannot resolve annotations: {exc}") from exc
    signature = inspect.signature(func)
    unknown = sorted(set(param_description) - set(signature.parameters))
    if unknown:
        raise TypeError(
            f"ofa_method {method_name}: param_description names unknown parameter(s) {', '.join(unknown)}"
        )
    parameters = []
    for pname, param in signature.parameters.items():
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(
                f"ofa_method {method_name}: parameter {pname!r} is positional-only; "
                "methods take named parameters only"
            )
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            raise TypeError(f"ofa_method {method_name}: *{pname} is not allowed; declare each parameter by name")
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            raise TypeError(f"ofa_method {method_name}: **{pname} is not allowed; declare each parameter by name")
        if pname.endswith(("_CMD", "_RESULT")) or "." in pname:
            raise TypeError(f"ofa_method {method_name}: parameter name {pname!r} is reserved or unroutable")
        annotation = hints.get(pname)
        base, optional, annotated_text = _unwrap(annotation) if annotation is not None else (None, False, "")
        _check_supported(method_name, pname, base)
        required = param.default is inspect.Parameter.empty
        parameters.append(
            Parameter(
                name=pname,
                annotation=base,
                optional=optional,
                required=required,
                default=None if required else param.default,
                description=(param_description.get(pname) or annotated_text or "").strip(),
            )
        )
    text = description if description is not None else (inspect.getdoc(func) or "")
    return MethodSpec(method_name, func, text.strip(), tuple(parameters))


def ofa_method(
    name: str | None = None,
    *,
    description: str | None = None,
    param_description: dict[str, str] | None = None,
) -> Callable[[F], F]:
    """Declare a function as an OpenFactory method; use it with parentheses.

    The function stays a plain function (callable and testable as is); its
    contract is attached for the asset blueprint that registers it.
    """
    if callable(name):
        raise TypeError(
            "ofa_method must be called with parentheses: write @ofa_method() "
            f"above {getattr(name, '__name__', name)!r}"
        )
    if name is not None and not isinstance(name, str):
        raise TypeError(f"ofa_method(name=...) must be a string, got {type(name).__name__}")

    def decorate(func: F) -> F:
        if not callable(func):
            raise TypeError(f"ofa_method decorates functions, got {type(func).__name__}")
        spec = build_spec(func, name=name, description=description, param_description=param_description)
        setattr(func, SPEC_ATTRIBUTE, spec)
        return func

    return decorate


def spec_of(func: Callable[..., Any]) -> MethodSpec:
    spec = getattr(func, SPEC_ATTRIBUTE, None)
    if not isinstance(spec, MethodSpec):
        raise TypeError(
            f"{getattr(func, '__name__', func)!r} is not an OpenFactory method; decorate it with @ofa_method()"
        )
    return spec
