"""``ofa_method``: what a method's signature promises to other assets (pure).

The decorator reads the signature once, at declaration, so that the
advertisement, command dispatch and the HTTP schema all come from one source.
"""

from __future__ import annotations

import enum
import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .commands import json_safe
from .conversion import ConversionError, text_converter
from .param_types import SUPPORTED_TEXT, ParamType, param_type, split_optional
from .protocol import COMMAND_SUFFIX, RESULT_SUFFIX, validate_identifier

F = TypeVar("F", bound=Callable[..., Any])

SPEC_ATTRIBUTE = "__ofa_method__"

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
    def declared(self) -> ParamType:
        """The declared type without its ``| None`` (the one table every use of the type reads)."""
        return param_type(self.annotation)

    @property
    def type_name(self) -> str:
        name = self.declared.name
        return f"{name} | None" if self.optional else name

    def convert(self, text: str) -> Any:
        """The reference's lax conversion of a command's string argument (see conversion.py)."""
        # typing.Optional, not "| None": the annotation may be a typing form, and the converter is cached on it
        annotation = self.annotation if not self.optional else typing.Optional[self.annotation]  # noqa: UP045
        try:
            return text_converter(annotation)(text)
        except ConversionError as exc:
            raise ArgumentError(f"argument {self.name!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class MethodSpec:
    name: str
    func: Callable[..., Any]
    description: str
    parameters: tuple[Parameter, ...]
    # True: an HTTP call runs in the receiving process (a read-only query); False: through the log
    run_anywhere: bool = False

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


def _unwrap(annotation: Any) -> tuple[Any, bool, str]:
    """Strip ``Annotated`` and ``Optional``; return (type, optional, description)."""
    description = ""
    if typing.get_origin(annotation) is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        description = next((m for m in metadata if isinstance(m, str)), "")
        annotation = base
    annotation, optional = split_optional(annotation)
    return annotation, optional, description


def _check_supported(func_name: str, name: str, annotation: Any) -> None:
    try:
        param_type(annotation)
    except TypeError:
        raise TypeError(
            f"ofa_method {func_name}: parameter {name!r} has annotation {annotation!r}; {SUPPORTED_TEXT}"
        ) from None


def build_spec(
    func: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    param_description: dict[str, str] | None = None,
    run_anywhere: bool = False,
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
        if pname.endswith((COMMAND_SUFFIX, RESULT_SUFFIX)) or "." in pname:
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
    return MethodSpec(method_name, func, text.strip(), tuple(parameters), run_anywhere=bool(run_anywhere))


def ofa_method(
    name: str | None = None,
    *,
    description: str | None = None,
    param_description: dict[str, str] | None = None,
    run_anywhere: bool = False,
) -> Callable[[F], F]:
    """Declare a function as an OpenFactory method; use it with parentheses.

    The function stays a plain function (callable and testable as is); its
    contract is attached for the asset blueprint that registers it. Every
    call goes through the asset's log and its one executor, whatever the
    channel; ``run_anywhere=True`` lets an HTTP call run in the process that
    received it instead (for a method that changes nothing, such as a query).
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
        spec = build_spec(func, name=name, description=description, param_description=param_description,
                          run_anywhere=run_anywhere)
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
