"""The OpenFactory platform's state tables in ksqlDB, asked about one asset.

The platform keeps every asset's current attributes in the ``assets`` table
and its type in ``assets_type``; these pull queries and the reading of their
rows are what an app (and the CLI's status) needs from them. They run on any
client that can answer a pull query, so they know nothing of HTTP.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from .answers import lookup
from .errors import KsqlDBError
from .statements import quote

__all__ = ["PullQueries", "asset_methods", "asset_state", "asset_type"]


class PullQueries(Protocol):
    """What the state queries need from a client: pull queries, and the server's URL for errors."""

    base_url: str

    def query(self, sql: str) -> list[dict[str, Any]]: ...


def asset_state(client: PullQueries, uuid: str) -> list[dict[str, Any]]:
    """Current attributes of an asset (methods excluded), as ksqlDB returns them."""
    return client.query(
        "SELECT ID, VALUE, TYPE, TAG, TIMESTAMP FROM assets "
        f"WHERE asset_uuid={quote(uuid)} AND TYPE != {quote('Method')};"
    )


def asset_methods(client: PullQueries, uuid: str) -> dict[str, Any]:
    """Advertised methods of an asset: name -> decoded advertisement.

    ksqlDB hands VALUE back as a string; an advertisement is JSON inside
    it, so it is decoded when it parses and left as text otherwise.
    """
    rows = client.query(
        "SELECT ID, VALUE, TYPE FROM assets "
        f"WHERE asset_uuid={quote(uuid)} AND TYPE={quote('Method')};"
    )
    methods: dict[str, Any] = {}
    for row in rows:
        try:
            name = lookup(row, "ID")
            value = lookup(row, "VALUE")
        except KeyError as exc:
            raise KsqlDBError(
                f"method row lacks column {exc.args[0]}: {row!r}", url=client.base_url + "/query"
            ) from None
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):
                pass
        methods[str(name)] = value
    return methods


def asset_type(client: PullQueries, uuid: str) -> str | None:
    """The asset's ``AssetType``, or None when ksqlDB does not know the asset."""
    rows = client.query(f"SELECT TYPE FROM assets_type WHERE ASSET_UUID={quote(uuid)};")
    if not rows:
        return None
    try:
        value = lookup(rows[0], "TYPE")
    except KeyError:
        raise KsqlDBError(
            f"assets_type row lacks column TYPE: {rows[0]!r}", url=client.base_url + "/query"
        ) from None
    return None if value is None else str(value)
