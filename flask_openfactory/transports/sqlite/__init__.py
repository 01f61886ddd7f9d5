"""``sqlite:///path.db``: the embedded transport, one database file shared by every process.

The modules, one job each: ``location`` (the URL and path, checked without
I/O), ``guard`` (is the file still the log, and usable), ``forking`` (no
handle crosses a fork), ``schema`` (the tables), ``database`` (per-thread
connections, retried transactions), ``log`` (appending and walking the log),
``committed`` (where command reader groups resume), ``readers`` (follower and
command reader), ``transport`` (the Transport the runtime uses).
"""

from __future__ import annotations

from .guard import FileGuard, Identity, LogFault, ensure_log_id
from .location import check_location, database_path
from .readers import SqliteCommandReader, SqliteFollower
from .transport import SqliteTransport

__all__ = [
    "FileGuard",
    "Identity",
    "LogFault",
    "SqliteCommandReader",
    "SqliteFollower",
    "SqliteTransport",
    "check_location",
    "database_path",
    "ensure_log_id",
]
