"""Transports: where records go and commands come from, chosen by one URL.

``memory://[name]`` (one process, tests), ``sqlite:///path`` (one machine, the
embedded default) and ``kafka://host:port[,host:port]`` (an OpenFactory
platform). Each is imported only when used, so that the embedded default does
not need a Kafka client library loaded.
"""

from __future__ import annotations

from typing import Any

from .base import (
    CommandReader,
    ConfigurationError,
    Follower,
    Health,
    LogEntry,
    Transport,
    TransportBusy,
    TransportError,
    TransportOptions,
)

SCHEMES = ("memory", "sqlite", "kafka")

__all__ = [
    "CommandReader",
    "ConfigurationError",
    "Follower",
    "Health",
    "LogEntry",
    "SCHEMES",
    "Transport",
    "TransportBusy",
    "TransportError",
    "TransportOptions",
    "check_url",
    "create_transport",
    "scheme_of",
]


def scheme_of(url: Any) -> str:
    """Validate a transport URL's scheme without creating anything."""
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"transport URL {url!r} must look like memory://, sqlite:///path or kafka://host:port"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise ConfigurationError(
            f"transport URL {url!r}: unknown scheme {scheme!r}; use one of {', '.join(SCHEMES)}"
        )
    return scheme


def check_url(url: Any) -> str:
    """Everything about a URL that can be known without I/O: a URL that can never work fails here."""
    scheme = scheme_of(url)
    if scheme == "sqlite":
        from .sqlite import check_location, database_path

        check_location(database_path(url))
    elif scheme == "kafka":
        from .kafka import parse_bootstrap

        parse_bootstrap(url)
    return scheme


def create_transport(url: str, options: TransportOptions | None = None) -> Transport:
    """Build the transport for ``url`` in this process (no I/O for memory and sqlite)."""
    scheme = scheme_of(url)
    if scheme == "memory":
        from .memory import MemoryTransport

        return MemoryTransport(url, options)
    if scheme == "sqlite":
        from .sqlite import SqliteTransport

        return SqliteTransport(url, options)
    from .kafka import KafkaTransport

    return KafkaTransport(url, options)
