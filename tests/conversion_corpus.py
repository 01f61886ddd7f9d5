"""A seeded corpus of argument strings for the differential conversion test.

Built to hit the edges of number, bool and JSON syntax (signs, underscores,
decimal zeros, exponents, Unicode spaces and digits, the 4300-digit limit),
mixed with plain random text.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

SPACES = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x85", "\xa0", "\u1680", "\u2007", "\u2028", "\u202f",
          "\u3000", "\x1c", "\x1f", "\u200b", "\ufeff", "\x00"]
WORDS = ["true", "false", "yes", "no", "on", "off", "t", "f", "y", "n", "1", "0", "inf", "infinity", "nan",
         "none", "null", "auto", "manual", "a", "b", "x", "red", "RED", "2", "3", "1.0", "0.0", "tru", "ye"]
ODD_DIGITS = "０１２３４５６７８９٠١٢٣٤٥٦٧٨٩۵߃१"
JUNK = "abcxyzEe_.,+-/:;'\"[]{}()#$%&*ÿ€\u0301"


def _digits(rng: random.Random) -> str:
    length = rng.choice([1, 1, 2, 3, 5, 8, 17, 18, 19, 20, 25, 40, rng.randint(4295, 4302)])
    text = "".join(rng.choice("0123456789") for _ in range(length))
    if rng.random() < 0.1:
        i = rng.randrange(len(text))
        text = text[:i] + rng.choice(ODD_DIGITS) + text[i + 1:]
    return text


def _underscored(rng: random.Random, text: str) -> str:
    if len(text) < 2 or rng.random() < 0.6:
        return text
    out = list(text)
    for _ in range(rng.randint(1, 3)):
        out.insert(rng.randint(0, len(out)), rng.choice(["_", "_", "__"]))
    return "".join(out)


def number_text(rng: random.Random) -> str:
    sign = rng.choice(["", "", "", "+", "-", "++", "+-", "-_", "_"])
    if rng.random() < 0.12:
        word = rng.choice(["inf", "Infinity", "nan", "NaN", "INF", "infinit", "i_nf", "in_f", "infinity_", "nAn"])
        return _wrap(rng, sign + word)
    whole = _digits(rng) if rng.random() < 0.9 else ""
    fraction = rng.choice(["", "", "", ".", ".0", ".00", ".000", ".5", ".25", ".0_0", ".0" + _digits(rng),
                           "." + _digits(rng), ".00000000000000000001", "..0"])
    exponent = rng.choice(["", "", "", "", "e3", "E-2", "e", "e+", "e_5", "e400", "e-400", "E+0", "e1_0", "e3.5"])
    text = _underscored(rng, sign + whole + fraction + exponent)
    return _wrap(rng, text)


def word_text(rng: random.Random) -> str:
    word = rng.choice(WORDS)
    word = "".join(c.upper() if rng.random() < 0.4 else c for c in word)
    return _wrap(rng, word)


def junk_text(rng: random.Random) -> str:
    pool = rng.choice([JUNK + "0123456789", "".join(SPACES) + "01", ODD_DIGITS + "+-._",
                       "".join(chr(rng.randint(32, 0x2FFF)) for _ in range(20))])
    return "".join(rng.choice(pool) for _ in range(rng.randint(0, 8)))


def _wrap(rng: random.Random, text: str) -> str:
    if rng.random() < 0.25:
        text = rng.choice(SPACES) + text
    if rng.random() < 0.25:
        text = text + rng.choice(SPACES)
    if rng.random() < 0.03 and text:
        i = rng.randrange(len(text))
        text = text[:i] + rng.choice(SPACES + list(JUNK)) + text[i:]
    return text


def scalar_text(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.6:
        return number_text(rng)
    if roll < 0.85:
        return word_text(rng)
    return junk_text(rng)


def _distinct(make: Callable[[random.Random], str], seed: int, size: int) -> list[str]:
    """``size`` distinct strings from ``make``, in the order first made."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    while len(seen) < size:
        seen[make(rng)] = None
    return list(seen)


def scalar_corpus(seed: int, size: int) -> list[str]:
    return _distinct(scalar_text, seed, size)


def _json_scalar(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(["0", "1", "2", "-1", "1.0", "0.0", "2.5", "1e3", "1e400", "-1e400", "1E2",
                           "12345678901234567890", "9.3e18", "9223372036854775807.0", "-9.3e18", "NaN", "Infinity",
                           "-Infinity"])
    if roll < 0.45:
        return rng.choice(["true", "false", "null"])
    if roll < 0.55:
        return str(rng.randint(-10**6, 10**6))
    return json.dumps(scalar_text(rng)) if rng.random() < 0.9 else json.dumps(rng.choice(WORDS))


def json_text(rng: random.Random, depth: int = 0) -> str:
    roll = rng.random()
    if roll < 0.45 or depth > 1:
        items = [_json_scalar(rng) for _ in range(rng.randint(0, 4))]
        if depth < 2 and rng.random() < 0.1:
            items.append(json_text(rng, depth + 1))
        return "[" + ", ".join(items) + "]"
    if roll < 0.85:
        keys = [json.dumps(rng.choice(["a", "b", "1", " 2", "x_1", "3.0", "", "1_0"]))
                for _ in range(rng.randint(0, 3))]
        values = [_json_scalar(rng) if rng.random() < 0.9 else json_text(rng, depth + 1) for _ in keys]
        return "{" + ", ".join(f"{k}: {v}" for k, v in zip(keys, values, strict=True)) + "}"
    if roll < 0.93:
        return _json_scalar(rng)
    return rng.choice(["[1, 2", "{1: 2}", "", "[1,]", "nul", "[[[[1]]]]", "  [1]  ", "[1] x", "{'a': 1}"])


def json_corpus(seed: int, size: int) -> list[str]:
    return _distinct(json_text, seed, size)
