"""The command path converts arguments exactly as the reference does (pydantic v2, lax mode).

Differential: every string of a generated corpus goes through our converter and
through ``pydantic.TypeAdapter(T).validate_python`` (for containers, on the JSON-
decoded text: the reference itself rejects every string for them). Both must
reject, or both accept with the same value of the same type. The one allowed
difference is a non-finite float, which we refuse and pydantic accepts.
"""

from __future__ import annotations

import enum
import itertools
import json
import math
import typing
from typing import Any, Literal, Optional

import pytest
from pydantic import TypeAdapter, ValidationError

from flask_openfactory.wire.conversion import ConversionError, takes_json, text_converter
from flask_openfactory.wire.methods import ArgumentError, build_spec
from tests.conversion_corpus import json_corpus, scalar_corpus

SCALAR_CORPUS_SIZE = 12_000
JSON_CORPUS_SIZE = 4_000


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Mode(enum.Enum):
    AUTO = "auto"
    MANUAL = 2


class Kind(enum.StrEnum):
    A = "a"
    X = "x"


SCALAR_TYPES: list[Any] = [
    int, float, bool, str, Optional[int], float | None, bool | None,  # noqa: UP045 (both spellings on purpose)
    Literal["a", "b", 3], Literal[1, True, "1"], Color, Level, Mode, Kind,
]
CONTAINER_TYPES: list[Any] = [
    list, dict, list[int], list[float], list[bool], list[str], list[int | None], Optional[list[int]],  # noqa: UP045 (both spellings)
    dict[str, int], dict[str, float], dict[int, bool], list[list[int]], list[Literal["a", 1, True]],
    list[Level], list[Mode], list[Color], dict[str, list[float]], list[Any],
]

_NO_VALUE = object()


def _pydantic(annotation: Any, text: str) -> Any:
    """The reference's value for this argument, or _NO_VALUE when it rejects it."""
    adapter = _adapters.setdefault(annotation, TypeAdapter(annotation))
    try:
        value: Any = json.loads(text) if takes_json(annotation) else text
    except (ValueError, RecursionError):
        return _NO_VALUE
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return _NO_VALUE


_adapters: dict[Any, TypeAdapter[Any]] = {}


_REFUSED_NON_FINITE = object()


def _ours(annotation: Any, text: str) -> Any:
    try:
        return text_converter(annotation)(text)
    except ConversionError as exc:
        # The deliberate difference: also a NaN in JSON that a duplicate key overwrites later.
        return _REFUSED_NON_FINITE if "finite" in str(exc) else _NO_VALUE


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(k1, k2) and _same(a[k1], b[k2]) for k1, k2 in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def differences(annotation: Any, corpus: list[str]) -> tuple[list[tuple[str, Any, Any]], int, int]:
    """(differences, accepted by both, non-finite values we refuse)."""
    found, accepted, non_finite = [], 0, 0
    for text in corpus:
        theirs, ours = _pydantic(annotation, text), _ours(annotation, text)
        if theirs is _NO_VALUE and ours in (_NO_VALUE, _REFUSED_NON_FINITE):
            continue
        if theirs is not _NO_VALUE and ours is _REFUSED_NON_FINITE:
            non_finite += 1
            continue
        if theirs is _NO_VALUE or ours is _NO_VALUE or not _same(theirs, ours):
            found.append((text, theirs, ours))
            continue
        accepted += 1
    return found, accepted, non_finite


@pytest.fixture(scope="module")
def scalar_texts() -> list[str]:
    corpus = scalar_corpus(seed=14, size=SCALAR_CORPUS_SIZE)
    assert len(set(corpus)) == SCALAR_CORPUS_SIZE
    return corpus


@pytest.fixture(scope="module")
def json_texts() -> list[str]:
    return json_corpus(seed=14, size=JSON_CORPUS_SIZE)


@pytest.mark.parametrize("annotation", SCALAR_TYPES, ids=str)
def test_scalar_conversion_matches_pydantic(annotation: Any, scalar_texts: list[str]) -> None:
    choices = [str(getattr(c, "value", c)) for c in typing.get_args(annotation)]
    is_enum = isinstance(annotation, type) and issubclass(annotation, enum.Enum)
    choices += [str(m.value) for m in annotation] if is_enum else []
    found, accepted, non_finite = differences(annotation, scalar_texts + choices)
    print(f"{annotation}: {len(scalar_texts) + len(choices)} strings, {accepted} accepted by both, "
          f"{non_finite} non-finite refused, {len(found)} differences")
    assert not found, found[:10]
    assert accepted > 0  # the corpus reaches the accepting side of every type


@pytest.mark.parametrize("annotation", CONTAINER_TYPES, ids=str)
def test_container_conversion_matches_pydantic(annotation: Any, json_texts: list[str], scalar_texts: list[str]) -> None:
    corpus = json_texts + scalar_texts[:1000]
    found, accepted, non_finite = differences(annotation, corpus)
    print(f"{annotation}: {len(corpus)} strings, {accepted} accepted by both, "
          f"{non_finite} non-finite refused, {len(found)} differences")
    assert not found, found[:10]
    assert accepted > 0


@pytest.mark.parametrize("annotation, text", [
    (float, "inf"), (float, "-Infinity"), (float, "nan"), (float, "1e400"), (float | None, "-1e400"),
    (list[float], '["inf"]'), (list[float], "[1e400]"), (list, "[NaN]"), (dict, '{"a": Infinity}'),
])
def test_non_finite_floats_are_refused(annotation: Any, text: str) -> None:
    assert _pydantic(annotation, text) is not _NO_VALUE  # the reference would send the machine to infinity
    assert _ours(annotation, text) is _REFUSED_NON_FINITE


@pytest.mark.parametrize("annotation, text, expected", [
    (int, "5.0", 5), (int, "5.00", 5), (int, "1_000", 1000), (int, " 42 ", 42), (float, "1e3", 1000.0),
    (bool, "yes", True), (bool, "OFF", False), (Level, "2", Level.HIGH), (list[int], '[1, "2", 3.0]', [1, 2, 3]),
])
def test_the_issues_cases(annotation: Any, text: str, expected: Any) -> None:
    assert _same(text_converter(annotation)(text), expected)


@pytest.mark.parametrize("annotation, text", [
    (int, "2.5"), (int, "1e3"), (int, "１２"), (bool, " true"), (list[str], '["a", 1]'), (list[int], '["a", "b"]'),
    (Optional[int], "null"), (Literal[1, 2], "1"),  # noqa: UP045 (the typing.Optional spelling on purpose)
])
def test_refused_as_the_reference_refuses(annotation: Any, text: str) -> None:
    assert _pydantic(annotation, text) is _NO_VALUE
    with pytest.raises(ConversionError):
        text_converter(annotation)(text)


def test_a_method_parameter_uses_these_rules() -> None:
    def move(speed: int, steps: list[int], mode: Mode = Mode.AUTO) -> None: ...

    spec = build_spec(move)
    assert spec.convert_arguments({"speed": "100.0", "steps": '[1, "2"]', "mode": "auto"}) == {
        "speed": 100, "steps": [1, 2], "mode": Mode.AUTO}
    with pytest.raises(ArgumentError, match="steps.*item 0"):
        spec.convert_arguments({"speed": "1", "steps": '["a", "b"]'})


def test_an_unsupported_annotation_is_refused_at_declaration() -> None:
    def bad(when: list[complex]) -> None: ...

    with pytest.raises(TypeError, match="when"):
        build_spec(bad)


@pytest.mark.parametrize("annotation, alphabet, longest", [
    (int, "01_-+.9", 5),  # signs, zeros, underscores and dots in every order: pydantic's odd corners
    (float, "01_-+.e ", 4),
    (int, "0_- .a\u00a0", 4),
])
def test_every_short_string_over_a_number_alphabet_matches_pydantic(annotation: Any, alphabet: str,
                                                                       longest: int) -> None:
    corpus = ["".join(chars) for n in range(1, longest + 1) for chars in itertools.product(alphabet, repeat=n)]
    found, accepted, _ = differences(annotation, corpus)
    print(f"{annotation}: all {len(corpus)} strings up to {longest} characters over {alphabet!r}, "
          f"{accepted} accepted by both, {len(found)} differences")
    assert not found, found[:10]
    assert accepted > 0
