"""What every command asks the transport first, each bounded: its masked URL, its health, the asset's state."""

from __future__ import annotations

from typing import Any

from ..runtime import AssetRuntime
from ..wire.protocol import Record
from .deadline import GRACE, Deadline, Session
from .group import fail
from .masking import mask, one_line


def transport_url(runtime: AssetRuntime) -> str:
    """The transport's own masked URL if it exists, else the configured one masked here."""
    if runtime.transport_created:  # never opens one just to name it
        try:
            return mask(str(runtime.transport.display_url))
        except Exception:
            pass
    return mask(runtime.settings.transport_url)


def read_records(session: Session, timeout: float) -> list[Record]:
    return session.run(session.runtime.records, timeout + GRACE, "reading the asset's state")


def check_transport(session: Session, timeout: float) -> dict[str, Any]:
    def check() -> dict[str, Any]:
        health = session.runtime.transport.check(timeout)
        return {"ok": bool(health.ok), "detail": mask(" ".join(str(health.detail).split()))}

    try:
        outcome = session.run(check, timeout + GRACE, "the transport check")
    except Deadline as exc:
        outcome = {"ok": False, "detail": f"no answer: {exc}"}
    except Exception as exc:
        outcome = {"ok": False, "detail": one_line(exc)}
    return {"url": transport_url(session.runtime), **outcome}


def require_transport(session: Session, timeout: float, code: int) -> None:
    """Ask the transport first, so that a backend that is down is named with its reason."""
    transport = check_transport(session, timeout)
    if not transport["ok"]:
        fail(f"transport {transport['url']} does not answer: {transport['detail']}", code)
