"""Hypothesis strategies and a seeded garbage generator for fuzzing the wire formats.

Shared by the fuzz tests so that every entry point (record decoding, envelope
parsing, argument conversion, config, ksqlDB answers, HTTP) is fed the same
kinds of hostile input: arbitrary JSON, nesting deeper than the JSON decoder's
recursion limit, integers longer than Python's int-string limit, invalid UTF-8.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

# -- JSON -------------------------------------------------------------------------------

json_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities too: json.dumps writes them, json.loads reads them
    st.text(),
)

json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=10), children, max_size=5),
    ),
    max_leaves=20,
)


def deep_json(depth: int, kind: str = "[") -> str:
    """Nesting past the C decoder's recursion limit: ``json.loads`` raises RecursionError."""
    if kind == "[":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


deep_json_texts: st.SearchStrategy[str] = st.builds(
    deep_json, st.integers(min_value=900, max_value=5000), st.sampled_from(["[", "{"])
)

# Longer than sys.int_info.default_max_str_digits (4300): int() and json.loads raise ValueError.
huge_digit_texts: st.SearchStrategy[str] = st.integers(min_value=4301, max_value=6000).map(lambda n: "7" * n)

hostile_texts: st.SearchStrategy[str] = st.one_of(
    st.text(),
    deep_json_texts,
    huge_digit_texts,
    st.sampled_from(["", " ", "null", "NaN", "Infinity", "-inf", "1e999", "[]", "{}", '"x"', "\x00", "\ud800"]),
)


def json_text(value: Any) -> str:
    """``json.dumps`` that never fails on what ``json_values`` generates."""
    return json.dumps(value)


any_json_texts: st.SearchStrategy[str] = st.one_of(json_values.map(json_text), hostile_texts)

any_bytes: st.SearchStrategy[bytes] = st.one_of(
    st.binary(max_size=200),
    any_json_texts.map(lambda t: t.encode("utf-8", "surrogatepass")),
)

# -- UUIDs in every spelling uuid.UUID accepts ------------------------------------------


@st.composite
def uuid_spellings(draw: st.DrawFn) -> tuple[str, str]:
    """(text as sent, canonical form): hex, urn, braces, upper case, padded with spaces."""
    value = draw(st.uuids())
    text = draw(
        st.sampled_from(
            [str(value), value.hex, value.urn, "{" + str(value) + "}", str(value).upper(), f"  {value}\t"]
        )
    )
    return text, str(value)


# -- command envelopes ------------------------------------------------------------------

clean_text = st.text(min_size=1, max_size=20).map(str.strip).filter(bool)


@st.composite
def envelope_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """A valid envelope as decoded JSON, with values already stripped (parsing strips them)."""
    moment = draw(
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
    )
    return {
        "header": {
            "correlation_id": str(draw(st.uuids())),
            "sender_uuid": draw(clean_text),
            "timestamp": moment.isoformat().replace("+00:00", "Z"),
            "signature": draw(st.none() | clean_text),
        },
        "arguments": draw(st.dictionaries(clean_text, st.text(max_size=20).map(str.strip), max_size=4)),
    }


# -- config values ----------------------------------------------------------------------

config_values: st.SearchStrategy[Any] = st.one_of(
    json_values,
    st.binary(max_size=10),
    st.integers(min_value=10**300, max_value=10**400),  # overflow float()
    st.integers(min_value=10**4400, max_value=10**4500).map(lambda n: -n),  # too long even for repr()
    st.integers(max_value=-1),
    st.floats(),
    st.sampled_from(["0", "1", "-1", "1e400", "nan", " 5 ", "true", "off", "/", "/x/", "lock", "group",
                     "memory://", "sqlite:///x", "kafka://h:1", "x://y", "://", "7" * 5000]),
    st.builds(object),
    st.tuples(st.integers()),
    st.frozensets(st.integers(), max_size=3),
)

# -- the seeded generator behind the acceptance run --------------------------------------


class Garbage:
    """Reproducible hostile values from one ``random.Random`` (no Hypothesis engine).

    The acceptance run needs ten thousand records in one log, each with an
    outcome known by construction; Hypothesis shrinks examples one at a time,
    which is the wrong tool for one long stream.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def text(self, max_size: int = 12) -> str:
        rng = self.rng
        pools = ["abcxyz", "0123456789", " \t\n", "._*>-", "é漢\u200b\U0001f600", "\"\\{}[]:,"]
        return "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(0, max_size)))

    def scalar(self) -> Any:
        rng = self.rng
        return rng.choice([
            None, True, False, rng.randint(-10**6, 10**6), rng.random() * 1e6, math.inf, -math.inf,
            math.nan, self.text(), 10**30,
        ])

    def json(self, depth: int = 3) -> Any:
        rng = self.rng
        roll = rng.random()
        if depth <= 0 or roll < 0.5:
            return self.scalar()
        if roll < 0.75:
            return [self.json(depth - 1) for _ in range(rng.randint(0, 4))]
        return {self.text(6): self.json(depth - 1) for _ in range(rng.randint(0, 4))}

    def not_a_json_object(self) -> bytes:
        """Bytes that no JSON decoder turns into an object."""
        rng = self.rng
        choice = rng.randrange(7)
        if choice == 0:
            return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 60)))
        if choice == 1:
            return b"\xff" + self.text().encode()  # invalid UTF-8
        if choice == 2:
            return json.dumps([self.json(), self.json()]).encode()
        if choice == 3:
            return json.dumps(self.scalar()).encode()
        if choice == 4:
            return deep_json(rng.randint(900, 3000), rng.choice("[{")).encode()
        if choice == 5:
            return ("9" * rng.randint(4301, 5000)).encode()
        return b'{"ID": "x", "TYPE": '  # truncated

    def timestamp(self, age: float = 0.0) -> str:
        moment = datetime.fromtimestamp(datetime.now(UTC).timestamp() - age, tz=UTC)
        return moment.isoformat().replace("+00:00", "Z")
