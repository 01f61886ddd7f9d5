"""What an app declares on its asset: attributes, methods, background tasks, subscriptions.

Filled before the runtime starts (``init_app`` and the blueprints); the IDs
declared here are also the only ones the runtime keeps current values of.
"""

from __future__ import annotations

from ..wire.methods import MethodSpec
from ..wire.protocol import Record
from .attributes import Attribute
from .subscriptions import SubscriptionSpec
from .tasks import TaskSpec


class Declarations:
    """One asset's declarations; an ID is an attribute or a method, never both."""

    def __init__(self, asset_uuid: str, standard: list[Attribute]) -> None:
        self.asset_uuid = asset_uuid
        self.attributes: dict[str, Attribute] = {a.id: a for a in standard}
        self.standard = frozenset(self.attributes)
        self.methods: dict[str, MethodSpec] = {}
        self.tasks: dict[str, TaskSpec] = {}
        self.subscriptions: dict[str, SubscriptionSpec] = {}

    def declare_attribute(self, attribute: Attribute) -> None:
        existing = self.attributes.get(attribute.id)
        if existing is not None and existing is not attribute:
            raise ValueError(f"attribute {attribute.id!r} is declared twice on asset {self.asset_uuid!r}")
        if attribute.id in self.methods:
            raise ValueError(f"{attribute.id!r} is already a method of asset {self.asset_uuid!r}")
        self.attributes[attribute.id] = attribute

    def declare_method(self, spec: MethodSpec) -> None:
        existing = self.methods.get(spec.name)
        if existing is not None and existing.func is not spec.func:
            raise ValueError(f"method {spec.name!r} is declared twice on asset {self.asset_uuid!r}")
        if spec.name in self.attributes:
            raise ValueError(f"{spec.name!r} is already an attribute of asset {self.asset_uuid!r}")
        self.methods[spec.name] = spec

    def declare_task(self, spec: TaskSpec) -> None:
        existing = self.tasks.get(spec.name)
        if existing is not None and existing.func is not spec.func:
            raise ValueError(f"background task {spec.name!r} is declared twice on asset {self.asset_uuid!r}")
        if existing is None:
            self.declare_attribute(spec.condition)
        self.tasks[spec.name] = spec

    def declare_subscription(self, spec: SubscriptionSpec) -> None:
        existing = self.subscriptions.get(spec.name)
        if existing is not None and existing.handler is not spec.handler:
            raise ValueError(f"subscription {spec.name!r} is declared twice on asset {self.asset_uuid!r} "
                             "(name one with @subscribe(..., name=...))")
        self.subscriptions[spec.name] = spec

    def cacheable(self, record: Record) -> bool:
        """Declared IDs (and our methods' commands and results) only: anyone may write
        any ID under our key, and the cache must stay bounded."""
        rid = record.id
        if rid in self.attributes or rid in self.methods:
            return True
        base, _, suffix = rid.rpartition("_")
        return suffix in ("CMD", "RESULT") and base in self.methods
