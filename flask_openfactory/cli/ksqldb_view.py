"""``flask ofa status``: the platform's view of this asset, as ksqlDB answers it.

The ksqlDB client is imported only when a URL is configured, so the CLI works without it.
"""

from __future__ import annotations

from typing import Any

from .deadline import GRACE, Deadline, Session
from .masking import mask, one_line
from .tables import ATTRIBUTE_HEADERS


def ksqldb_view(url: str | None, uuid: str, timeout: float, session: Session) -> dict[str, Any]:
    """The platform's view of this asset; the client is imported here so the CLI works without it."""
    if not url:
        return {"configured": False}
    shown = mask(url)
    try:
        from ..ksqldb import KsqlDBClient, KsqlDBUnavailable
    except ImportError as exc:
        return {"configured": True, "url": shown, "ok": False,
                "error": f"not reachable: the ksqlDB client cannot be imported ({one_line(exc)})"}

    def query() -> tuple[str | None, list[dict[str, Any]]]:
        try:
            client = KsqlDBClient(url, timeout=timeout, retries=0)
        except TypeError:
            client = KsqlDBClient(url, timeout=timeout)
        try:
            return client.asset_type(uuid), client.asset_state(uuid)
        finally:
            client.close()

    try:
        asset_type, rows = session.run(query, 2 * timeout + GRACE, "ksqlDB")
    except (KsqlDBUnavailable, Deadline) as exc:
        return {"configured": True, "url": shown, "ok": False, "error": f"not reachable: {one_line(exc)}"}
    except Exception as exc:
        return {"configured": True, "url": shown, "ok": False, "error": f"query failed: {one_line(exc)}"}
    attributes = [
        {key.lower(): _column(row, key) for key in ATTRIBUTE_HEADERS} for row in rows
    ]
    attributes.sort(key=lambda a: str(a["id"]))
    return {"configured": True, "url": shown, "ok": True, "asset_type": asset_type, "attributes": attributes}


def _column(row: dict[str, Any], name: str) -> Any:
    for key in (name, name.lower()):
        if key in row:
            return row[key]
    return None
