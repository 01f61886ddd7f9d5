"""Whether another asset answers commands with ``<method>_RESULT`` (pure).

Apps built on the reference SDK (openfactory-core) run the commands they get
but write no result: waiting for one only ends in a timeout, although the
command ran. A caller therefore decides from what the target advertises and
has written whether to wait, and otherwise reports the command as sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .commands import RESULT_TAG
from .protocol import RESULT_SUFFIX, Record

NO_RESULT_TEXT = "sent; this asset does not answer with results"


def _typed_contract(contract: Any) -> bool:
    """Our advertisements give each argument a type; the reference's give name and description only."""
    if isinstance(contract, str):
        try:
            contract = json.loads(contract)
        except (ValueError, RecursionError):
            return False
    arguments = contract.get("arguments") if isinstance(contract, dict) else None
    return isinstance(arguments, list) and any(isinstance(a, dict) and "type" in a for a in arguments)


def answers_with_results(records: Mapping[str, Record], methods: Mapping[str, Any], *,
                         library_manufacturer: str) -> bool | None:
    """True: the asset answers (it wrote a result, advertises typed arguments or runs this
    package); False: a known asset with none of these signs; None: nothing is known of it
    (keep waiting, as for any asset that may start later)."""
    if any(rid.endswith(RESULT_SUFFIX) and r.tag == RESULT_TAG for rid, r in records.items()):
        return True
    if any(_typed_contract(c) for c in methods.values()):
        return True
    library = records.get("openfactory_manufacturer")
    if library is not None and library.value == library_manufacturer:
        return True
    return False if records or methods else None
