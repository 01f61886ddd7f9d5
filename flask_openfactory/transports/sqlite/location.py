"""Where a ``sqlite:///`` URL puts the database, checked before anything is created.

A URL that can never work (no path, an in-memory or URI database, a
directory) is a configuration error raised at ``init_app``, before any I/O.
"""

from __future__ import annotations

import os

from ..errors import ConfigurationError

__all__ = ["check_location", "database_path"]


def database_path(url: str) -> str:
    """The absolute database path of a ``sqlite:///`` URL; a ConfigurationError names what is wrong."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    usage = "use sqlite:///relative/path.db or sqlite:////absolute/path.db"
    if not rest.startswith("/"):
        raise ConfigurationError(f"sqlite URL {url!r} needs three slashes before the path: {usage}")
    raw = rest[1:]
    if not raw:
        raise ConfigurationError(f"sqlite URL {url!r} names no database file: {usage}")
    if raw == ":memory:" or raw.startswith("file:") or "?" in raw:
        raise ConfigurationError(
            f"sqlite URL {url!r}: only a plain file path is supported (the database is shared "
            f"between processes): {usage}"
        )
    if raw.endswith("/"):
        raise ConfigurationError(f"sqlite URL {url!r} names a directory, not a database file: {usage}")
    return os.path.abspath(raw)


def check_location(path: str) -> None:
    """Fail early on a path SQLite could never use, without creating anything.

    The directory must be writable, not only the file: WAL mode and the
    command reader lock files create files next to the database. A folder or
    file that exists but is read-only now is a fault the guard reports (503,
    readiness) and heals from, not a configuration error.
    """
    if os.path.isdir(path):
        raise ConfigurationError(f"sqlite database path {path} is a directory; name a file inside it")
    existing = os.path.dirname(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigurationError(f"cannot create sqlite database {path}: {existing} is not a directory")
    if existing != os.path.dirname(path) and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigurationError(
            f"cannot use sqlite database {path}: directory {existing} is not writable"
        )
