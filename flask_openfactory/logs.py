"""Log lines that say which asset and which process: one hierarchy, ``flask_openfactory``.

The library adds no handler of its own (the host app or gunicorn decides
where lines go); under gunicorn the hooks route this hierarchy to gunicorn's
error log, whose format already carries the worker pid.
"""

from __future__ import annotations

import logging
import os
from typing import Any, MutableMapping


class AssetLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefix every line with ``[asset pid]`` and expose both as record fields."""

    def __init__(self, logger: logging.Logger, asset_uuid: str) -> None:
        super().__init__(logger, {"asset_uuid": asset_uuid})

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        pid = os.getpid()
        extra = kwargs.setdefault("extra", {})
        extra.update(asset_uuid=self.extra["asset_uuid"], pid=pid)  # type: ignore[index]
        return f"[{self.extra['asset_uuid']} pid {pid}] {msg}", kwargs  # type: ignore[index]


def route_to(handlers: list[logging.Handler], level: str | int) -> None:
    """Send the library's lines to ``handlers`` only (no duplicates via the root logger)."""
    logger = logging.getLogger("flask_openfactory")
    logger.handlers = list(handlers)
    logger.propagate = not handlers
    logger.setLevel(level)
