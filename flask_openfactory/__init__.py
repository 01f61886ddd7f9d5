"""flask-openfactory: make a Flask app a first-class OpenFactory asset."""

from .attributes import ConditionAttribute, EventAttribute, SampleAttribute
from .blueprint import AssetBlueprint
from .commands import CommandResult
from .extension import FlaskOpenFactory
from .globals import current_openfactory
from .methods import ofa_method
from .protocol import Record
from .runtime import AssetRuntime
from .tasks import StopSignal
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
    "current_openfactory",
    "ofa_method",
]
