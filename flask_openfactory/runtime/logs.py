"""Log lines that say which asset and which process: one hierarchy, ``flask_openfactory``.

The library adds no handler of its own (the host app or gunicorn decides
where lines go), except for ``OPENFACTORY_LOG_FORMAT = "json"``: then every
line of the hierarchy is one JSON object (the platform's log stack reads
JSON lines). Under gunicorn the hooks route the hierarchy to gunicorn's error
log, whose format already carries the worker pid, so our prefix leaves it out.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

LOGGER = "flask_openfactory"
_pid_in_format = False  # True once routed into handlers whose format shows the pid
_format = "text"

# What a method raises to refuse a call: answered ERROR, logged as one WARNING line.
# Anything else is a bug in the method: ERROR with its traceback.
EXPECTED_METHOD_ERRORS: tuple[type[BaseException], ...] = (ValueError, PermissionError, TimeoutError)


class AssetLog(logging.LoggerAdapter[logging.Logger]):
    """Prefix every line with ``[asset pid]`` (the pid once) and expose both as record fields."""

    def __init__(self, logger: logging.Logger, asset_uuid: str) -> None:
        super().__init__(logger, {"asset_uuid": asset_uuid})

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        pid = os.getpid()
        extra = kwargs.setdefault("extra", {})
        extra.update(asset_uuid=self.extra["asset_uuid"], pid=pid)  # type: ignore[index]
        if _format == "json":
            return msg, kwargs  # the fields are the JSON object's
        if _pid_in_format:
            return f"[{self.extra['asset_uuid']}] {msg}", kwargs  # type: ignore[index]
        return f"[{self.extra['asset_uuid']} pid {pid}] {msg}", kwargs  # type: ignore[index]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, message, asset, traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        asset = getattr(record, "asset_uuid", None)
        if asset is not None:
            entry["asset_uuid"] = asset
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _JsonHandler(logging.StreamHandler[TextIO]):
    """The one handler the library adds itself, and only for ``json``."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(JsonFormatter())


def configure_format(fmt: str) -> None:
    """``json``: the hierarchy's lines as JSON objects on stderr (or gunicorn's handlers, see route_to).

    Process-wide, like the logging module: the last app initialised decides.
    """
    global _format
    _format = fmt
    logger = logging.getLogger(LOGGER)
    ours = [h for h in logger.handlers if isinstance(h, _JsonHandler)]
    if fmt != "json":
        if ours:
            logger.handlers = [h for h in logger.handlers if h not in ours]
            logger.propagate = not logger.handlers
        return
    if not logger.handlers:
        logger.handlers = [_JsonHandler()]
        logger.propagate = False


def route_to(handlers: list[logging.Handler], level: str | int) -> None:
    """Send the library's lines to ``handlers`` only (no duplicates via the root logger)."""
    global _pid_in_format
    logger = logging.getLogger(LOGGER)
    if _format == "json":
        for handler in handlers:
            handler.setFormatter(JsonFormatter())
    logger.handlers = list(handlers)
    logger.propagate = not handlers
    _pid_in_format = bool(handlers)
    logger.setLevel(level)


def log_method_error(log: logging.LoggerAdapter[logging.Logger], method: str, correlation_id: str,
                     exc: BaseException) -> None:
    """A method that refuses a call is one WARNING line (traceback at DEBUG); a bug is an ERROR with it."""
    if isinstance(exc, EXPECTED_METHOD_ERRORS):
        log.warning("method %s (%s) answered ERROR: %s: %s", method, correlation_id, type(exc).__name__, exc)
        log.debug("method %s (%s) traceback", method, correlation_id, exc_info=exc)
    else:
        log.error("method %s (%s) raised %s: %s", method, correlation_id, type(exc).__name__, exc, exc_info=exc)


def gunicorn_logconfig() -> dict[str, Any]:
    """gunicorn's ``logconfig_dict`` for JSON lines from the master and the workers too."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "error_console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
            "console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"},
        },
        "loggers": {  # each line once: not again through the root logger
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
        "root": {"level": "INFO", "handlers": []},
    }
