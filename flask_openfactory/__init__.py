"""flask-openfactory: make a Flask app a first-class OpenFactory asset."""

from .blueprint import AssetBlueprint
from .extension import FlaskOpenFactory
from .globals import current_openfactory
from .runtime import AssetRuntime
from .runtime.attributes import ConditionAttribute, EventAttribute, SampleAttribute
from .runtime.tasks import StopSignal
from .transports import ConfigurationError, TransportBusy, TransportError
from .wire.commands import CommandResult
from .wire.methods import ofa_method
from .wire.protocol import Record

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
