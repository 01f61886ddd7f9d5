"""The errors every transport raises, in a room of their own.

Both the transport interface (``base``) and the host locks (``locks``) raise
them; keeping them here lets ``base`` use the locks without the locks
importing ``base`` back.
"""

from __future__ import annotations

__all__ = ["ConfigurationError", "TransportBusy", "TransportError"]


class TransportError(RuntimeError):
    """The transport cannot do what was asked; the message names what and where."""

    retry_after: float | None = None  # seconds a caller should wait before trying again, when known


class TransportBusy(TransportError):
    """The local outgoing queue stayed full for the bounded wait; nothing was queued.

    The HTTP API answers it with 503 and ``Retry-After``: the caller may retry
    once the backend takes records again.
    """

    retry_after: float = 5.0  # seconds: a hint for the caller


try:  # gunicorn prints an app-loading error as its one-line message and stops (exit 4)
    from gunicorn.errors import AppImportError as _AppLoadError
except ImportError:  # pragma: no cover - gunicorn is a dependency, but not on every platform
    _AppLoadError = Exception  # type: ignore[assignment,misc]  # the fallback base class


class ConfigurationError(ValueError, _AppLoadError):
    """A setting that can never work; raised before any I/O.

    Raised by ``init_app``, it stops a gunicorn worker at boot with one short
    line instead of a traceback and a restart loop: the message names the setting.
    """
