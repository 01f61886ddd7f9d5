"""Command dispatch: read the asset's log, execute each command once, commit.

``dispatcher`` runs the loop, ``admission`` decides what each entry is,
``runner`` runs or refuses it, ``recording`` writes the answers and holds those
the log refuses, ``bookkeeping`` remembers answered ids and done positions.
"""

from .bookkeeping import Deduper, OffsetTracker
from .dispatcher import Dispatcher, DispatcherState
from .runner import ContextFactory
from .settings import MAX_RETRY_DELAY, DispatchSettings

__all__ = [
    "MAX_RETRY_DELAY",
    "ContextFactory",
    "Deduper",
    "DispatchSettings",
    "Dispatcher",
    "DispatcherState",
    "OffsetTracker",
]
