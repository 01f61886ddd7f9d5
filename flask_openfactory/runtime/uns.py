"""Addressing an asset by its UNS (Unified Namespace) id, through ksqlDB.

The platform's deployer maps each asset UUID to a UNS path (``asset_to_uns_map``);
the reference's ``AssetUNS`` resolves the UUID with one pull query on every
access. There is no such table in a log, so the lookup needs ksqlDB.
"""

from __future__ import annotations

from typing import Any


class UNSLookupError(LookupError):
    """The UNS id maps to no asset, or there is no ksqlDB to ask."""


def resolve_uns(ksqldb_url: str | None, uns_id: str, *, client: Any = None) -> str:
    """The asset UUID that ``uns_id`` maps to now."""
    from ..ksqldb import KsqlDBClient, quote  # here: importing this module must not load requests

    if not isinstance(uns_id, str) or not uns_id.strip():
        raise ValueError(f"UNS id must be a non-empty string, got {uns_id!r}")
    if client is None:
        if not ksqldb_url:
            raise UNSLookupError(f"looking up UNS id {uns_id!r} needs ksqlDB: set OPENFACTORY_KSQLDB_URL "
                                 "(or KSQLDB_URL), where the platform's asset_to_uns_map table lives")
        client = KsqlDBClient(ksqldb_url)
    rows = client.query(f"SELECT asset_uuid FROM asset_to_uns_map WHERE uns_id={quote(uns_id)};")
    for row in rows:
        value = next((v for k, v in row.items() if k.upper() == "ASSET_UUID"), None)
        if isinstance(value, str) and value:
            return value
    raise UNSLookupError(f"UNS id {uns_id!r} maps to no asset (asset_to_uns_map at {client.base_url})")
