"""Writing ksqlDB statements safely: every interpolated value quoted, every name checked.

A UUID or UNS id containing ``'`` must never break or extend a statement;
the one place values enter statement text is ``quote``, and the one place a
stream or table name does is ``describe_statement``.
"""

from __future__ import annotations

import re

__all__ = ["describe_statement", "quote"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def quote(value: str) -> str:
    """Return ``value`` as a ksqlDB string literal.

    ksqlDB literals escape a quote by doubling it and know no backslash
    escapes, so doubling ``'`` is the whole job; anything else would let a
    UUID containing ``'`` break or extend the statement. NUL is refused
    because no legitimate identifier contains it and it truncates text in
    some layers between us and ksqlDB.
    """
    if not isinstance(value, str):
        raise TypeError(f"quote() needs a str, got {type(value).__name__}")
    if "\x00" in value:
        raise ValueError("a ksqlDB string literal cannot contain NUL")
    return "'" + value.replace("'", "''") + "'"


def describe_statement(source: str) -> str:
    """``DESCRIBE <source> EXTENDED;`` for a plain stream or table name.

    ``source`` is an identifier, not a literal, so it cannot be quoted;
    it is restricted to a plain ksqlDB identifier instead.
    """
    if not isinstance(source, str) or not _IDENTIFIER.match(source):
        raise ValueError(f"not a plain ksqlDB stream/table name: {source!r}")
    return f"DESCRIBE {source} EXTENDED;"
