"""How a declared attribute finds the current app's runtime, without importing it.

Attributes are module-level declarations that hold no value: ``.value`` and
``.set`` go to the runtime of the app in whose context they run. Which runtime
that is, is the Flask glue's business (``globals`` installs the lookup when it
is imported, which importing the package does); this module only holds the
hook and names what a declaration needs from a runtime (``AttributeStore``), so
that declarations depend on neither Flask nor the runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..wire.protocol import Record


class AttributeStore(Protocol):
    """What a declaration needs from a runtime: its current record, and a write."""

    def get(self, attr_id: str) -> Record | None: ...

    def set(self, attr_id: str, value: Any, *, tag: str | None = None) -> Record: ...


def _no_lookup() -> AttributeStore:
    raise RuntimeError("no lookup of the current OpenFactory runtime is installed: "
                       "import flask_openfactory (its globals install it) before reading or setting attributes")


class RuntimeLookup:
    """Holds the installed lookup; read on every attribute set, so it is the installed
    function itself that is called (one attribute read, nothing wrapped around it)."""

    __slots__ = ("find",)

    def __init__(self) -> None:
        self.find: Callable[[], AttributeStore] = _no_lookup

    def install(self, find: Callable[[], AttributeStore]) -> None:
        """Make ``find`` the way declarations reach the current runtime (the Flask glue calls it)."""
        self.find = find


runtime_lookup = RuntimeLookup()
