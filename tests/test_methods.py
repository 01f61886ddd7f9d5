import enum
import json
from typing import Annotated, Any, Literal

import pytest

from flask_openfactory.wire.methods import ArgumentError, ofa_method, spec_of


def test_bare_use_is_an_error_that_says_so():
    with pytest.raises(TypeError, match=r"must be called with parentheses: write @ofa_method\(\)"):

        @ofa_method
        def move() -> None: ...


@pytest.mark.parametrize(
    "source, message",
    [
        ("def f(a, /, b): ...", "positional-only"),
        ("def f(*args): ...", r"\*args is not allowed"),
        ("def f(a, **kwargs): ...", r"\*\*kwargs is not allowed"),
    ],
)
def test_signatures_with_unnamed_parameters_are_rejected(source, message):
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    with pytest.raises(TypeError, match=message):
        ofa_method()(namespace["f"])


def test_unsupported_annotation_and_unknown_param_description_are_rejected():
    with pytest.raises(TypeError, match="unsupported|supported are"):

        @ofa_method()
        def f(x: complex) -> None: ...

    with pytest.raises(TypeError, match="unknown parameter"):

        @ofa_method(param_description={"z": "nope"})
        def g(x: int) -> None: ...


def test_advertisement_matches_the_contract_literally():
    @ofa_method(param_description={"speed": "feed rate"})
    def move_axis(x: Annotated[float, "target X"], y: float, speed: int = 100) -> None:
        """Move the axes."""

    spec = spec_of(move_axis)
    assert spec.name == "move_axis"
    value = spec.advertisement()
    assert isinstance(value, str)  # JSON inside the JSON
    assert json.loads(value) == {
        "description": "Move the axes.",
        "arguments": [
            {"name": "x", "description": "target X", "type": "float", "required": True, "default": None},
            {"name": "y", "description": "", "type": "float", "required": True, "default": None},
            {"name": "speed", "description": "feed rate", "type": "int", "required": False, "default": 100},
        ],
    }


def test_description_precedence_and_external_name():
    @ofa_method(name="start_job", description="  explicit  ")
    def run() -> None:
        """docstring"""

    @ofa_method()
    def plain() -> None: ...

    assert spec_of(run).name == "start_job"
    assert spec_of(run).description == "explicit"
    assert spec_of(plain).description == ""
    assert json.loads(spec_of(plain).advertisement()) == {"description": "", "arguments": []}


def test_decorated_function_stays_a_plain_function():
    @ofa_method()
    def add(a: int, b: int = 1) -> int:
        return a + b

    assert add(2) == 3


def test_method_names_that_cannot_be_routed_are_rejected():
    with pytest.raises(ValueError, match="cannot route"):
        ofa_method(name="a.b")(lambda: None)


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


@ofa_method()
def typed(
    n: int,
    f: float,
    b: bool,
    s: str,
    raw,
    mode: Mode = Mode.FAST,
    pick: Literal["a", "b"] = "a",
    maybe: int | None = None,
    items: list = [],  # noqa: B006
) -> None: ...


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("n", "200", 200),
        ("n", " -3 ", -3),
        ("f", "1e3", 1000.0),
        ("f", "2.5", 2.5),
        ("f", "7", 7.0),
        ("b", "true", True),
        ("b", "OFF", False),
        ("b", "1", True),
        ("b", "no", False),
        ("s", "  keep  ", "  keep  "),
        ("raw", "anything", "anything"),
        ("mode", "slow", Mode.SLOW),
        ("mode", "fast", Mode.FAST),
        ("pick", "b", "b"),
        ("maybe", "5", 5),
        ("n", "5.0", 5),
        ("n", "1_000", 1000),
        ("items", "[1, 2]", [1, 2]),
    ],
)
def test_lax_conversion_accepts(name, text, expected):
    spec = spec_of(typed)
    param = next(p for p in spec.parameters if p.name == name)
    assert param.convert(text) == expected


@pytest.mark.parametrize(
    "name, text",
    [("n", "2.5"), ("n", "abc"), ("n", "１２"), ("f", "nan"), ("f", "x"), ("b", "maybe"), ("mode", "medium"),
     ("pick", "c"), ("items", "{}"), ("items", "["),
     # as the reference: an enum by its value only; a string is never None
     ("mode", "FAST"), ("maybe", "null")],
)
def test_lax_conversion_rejects(name, text):
    spec = spec_of(typed)
    param = next(p for p in spec.parameters if p.name == name)
    with pytest.raises(ArgumentError, match=name):
        param.convert(text)


def test_convert_arguments_reports_missing_and_unknown():
    spec = spec_of(typed)
    base = {"n": "1", "f": "1", "b": "true", "s": "x", "raw": "r"}
    assert spec.convert_arguments(base) == {"n": 1, "f": 1.0, "b": True, "s": "x", "raw": "r"}
    with pytest.raises(ArgumentError, match="missing required argument 'n'"):
        spec.convert_arguments({k: v for k, v in base.items() if k != "n"})
    with pytest.raises(ArgumentError, match="unknown argument"):
        spec.convert_arguments({**base, "bogus": "1"})
