"""The ksqlDB REST client: where the platform's state lives and its assets topic is named.

Not a transport: the Kafka transport asks it for the topic, the runtime and
the CLI for an asset's state and the UNS map. Importing it loads ``requests``.
"""

from __future__ import annotations

from .answers import parse_query_answer
from .client import KsqlDBClient
from .errors import KsqlDBError, KsqlDBUnavailable
from .statements import quote

__all__ = [
    "KsqlDBClient",
    "KsqlDBError",
    "KsqlDBUnavailable",
    "parse_query_answer",
    "quote",
]
