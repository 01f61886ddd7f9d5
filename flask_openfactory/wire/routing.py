"""Asset UUIDs the platform's fan-out layer cannot route to other assets (pure).

The platform copies each record to NATS subject ``<key>.<ID>``, and the
reference SDK's clients subscribe to ``<UUID upper-cased>.*``: an asset whose
UUID is not upper case is never seen live by them (0 messages), and a subject
cannot carry white space or control characters at all. ``validate_identifier``
already refuses ``.``, ``*``, ``>``, spaces, tabs and newlines; what is left
here is legal for Kafka and for this package, so it is a warning, given at
start, by ``flask ofa status`` and in the README's configuration table.
"""

from __future__ import annotations

import unicodedata


def routing_warnings(asset_uuid: str) -> list[str]:
    """Why other assets on the platform would not see this UUID live; empty when they would."""
    warnings = []
    upper = asset_uuid.upper()
    if upper != asset_uuid:
        warnings.append(
            f"asset UUID {asset_uuid!r} is not upper case: the platform's reference clients subscribe to "
            f"{upper + '.*'!r} and never see this asset's updates, so they cannot follow it live; "
            f"name it {upper!r} (APP_UUID / OPENFACTORY_APP_UUID)"
        )
    odd = sorted({c for c in asset_uuid if c.isspace() or unicodedata.category(c).startswith("C")})
    if odd:
        shown = ", ".join(f"U+{ord(c):04X}" for c in odd)
        warnings.append(
            f"asset UUID {asset_uuid!r} contains {shown} (white space or control characters), which "
            "the platform's NATS subjects cannot carry: other assets will not receive its updates"
        )
    return warnings
