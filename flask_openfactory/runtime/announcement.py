"""What the asset says of itself at start-up: its identity, methods and attributes.

Written once per deployment (``Deployment.join`` decides when); the digest of
what is announced is part of the deployment's marker, so that a reload with
changed methods or attributes announces again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from ..wire.protocol import METHOD, Record
from .attributes import Attribute, EventAttribute, PlatformAttribute
from .package_meta import package_meta
from .registry import Declarations
from .settings import ASSET_TYPE, AVAILABLE, RuntimeSettings


def standard_attributes() -> list[Attribute]:
    """The attributes every app publishes (contract section 3, plus AssetType)."""
    return [
        EventAttribute("avail", tag="Availability"),
        EventAttribute("application_version", tag="Application.Version"),
        EventAttribute("application_manufacturer", tag="Application.Manufacturer"),
        EventAttribute("application_license", tag="Application.License"),
        EventAttribute("openfactory_version", tag="Library.Version"),
        EventAttribute("openfactory_manufacturer", tag="Library.Manufacturer"),
        EventAttribute("openfactory_license", tag="Library.License"),
        PlatformAttribute("AssetType", tag="AssetType"),
    ]


class Announcement:
    """The start-up records of one asset, published through its runtime's writes."""

    def __init__(
        self,
        settings: RuntimeSettings,
        declared: Declarations,
        *,
        set_value: Callable[[str, Any], Record],
        publish: Callable[[Record], None],
    ) -> None:
        self._settings = settings
        self._declared = declared
        self._set = set_value
        self._publish = publish

    def fixed_identity(self) -> dict[str, Any]:
        version, manufacturer, license_ = package_meta()
        return {
            "application_version": self._settings.application_version,
            "application_manufacturer": self._settings.application_manufacturer,
            "application_license": self._settings.application_license,
            "openfactory_version": version,
            "openfactory_manufacturer": manufacturer,
            "openfactory_license": license_,
            "AssetType": ASSET_TYPE,
            "avail": AVAILABLE,
        }

    def digest(self) -> str:
        """Names what is announced: equal digests, nothing new to announce."""
        parts = [repr(sorted(self.fixed_identity().items()))]
        parts += [f"{spec.name}={spec.advertisement()}" for spec in self._declared.methods.values()]
        parts += sorted(self._declared.attributes)
        return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:16]

    def publish(self, snapshot: Mapping[str, Record]) -> None:
        """Metadata once per start; user attributes keep the platform's last value."""
        declared = self._declared
        asset_uuid = self._settings.asset_uuid
        for attr_id, value in self.fixed_identity().items():
            self._set(attr_id, value)
        for spec in declared.methods.values():
            self._publish(Record.create(asset_uuid, spec.name, spec.advertisement(), tag=METHOD, type=METHOD))
        reported = {task.condition.id for task in declared.tasks.values()}  # only the task's runner sets them
        for attribute in declared.attributes.values():
            if attribute.id not in declared.standard and attribute.id not in snapshot and attribute.id not in reported:
                self._set(attribute.id, attribute.default)
