"""The installed distribution's version, author and licence.

Its own module because two rooms need it: the runtime announces them at start
(``Library.*`` attributes) and ``RemoteAsset`` recognises another app of this
library by them; neither should import the other for that.
"""

from __future__ import annotations

import functools
from importlib import metadata


@functools.cache  # parsing the METADATA file costs a few ms, and the start asks twice
def package_meta() -> tuple[str, str, str]:
    """(version, author, licence) of flask-openfactory; "unknown" where not installed."""
    try:
        meta = metadata.metadata("flask-openfactory")
        # typeshed declares get() from 3.12; on 3.11 the object is an email Message, which has it too
        author, licence = meta.get("Author"), meta.get("License")  # type: ignore[attr-defined]
        return meta["Version"], author or "unknown", licence or "unknown"
    except metadata.PackageNotFoundError:
        return "unknown", "unknown", "unknown"
