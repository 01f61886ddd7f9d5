"""flask-openfactory: make a Flask app a first-class OpenFactory asset."""

from .attributes import ConditionAttribute, EventAttribute, SampleAttribute
from .blueprint import AssetBlueprint
from .commands import CommandResult
from .extension import FlaskOpenFactory
from .globals import current_openfactory
from .methods import ofa_method
from .protocol import Record
from .runtime import AssetRuntime
from .subscriptions import subscribe
from .tasks import StopSignal, background_task
from .transports import ConfigurationError, TransportBusy, TransportError

__all__ = [
    "AssetBlueprint",
    "AssetRuntime",
    "CommandResult",
    "ConditionAttribute",
    "ConfigurationError",
    "EventAttribute",
    "FlaskOpenFactory",
    "Record",
    "SampleAttribute",
    "StopSignal",
    "TransportBusy",
    "TransportError",
    "background_task",
    "current_openfactory",
    "ofa_method",
    "subscribe",
]
