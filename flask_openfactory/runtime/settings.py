"""The runtime's settings and the fixed numbers of its lifecycle.

A frozen dataclass the extension builds from the app's config (``settings.py``
of the package) and everything in the runtime reads; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..transports import TransportOptions
from ..wire.commands import ArgumentLimits
from ..wire.signing import SigningKeys
from .metrics_registry import MetricsTarget
from .storage import StorageConfig

AVAILABLE = "AVAILABLE"
ASSET_TYPE = "OpenFactoryApp"
STANDALONE = "process:"  # a deployment of one process (flask run, waitress, tests)
DEPLOYMENT_LOCK_SECONDS = 10.0  # bounded wait for another process's start or stop decision
CANDIDATE_GRACE = 0.5  # a retiring executor hands over to a candidate that stood this long
START_CHECK_SECONDS = 5.0  # the first contact with the log at start
CALL_WINDOW_MARGIN = 60.0  # calls are remembered this much past the max age (clock skew)


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    asset_uuid: str
    transport_url: str
    transport_options: TransportOptions = field(default_factory=TransportOptions)
    consumer_group: str | None = None
    execute_commands: bool = True
    command_max_age: float = 300.0
    command_timeout: float = 60.0
    command_concurrency: int = 1
    dedupe_size: int = 100_000  # answered calls remembered at most (within the max age)
    stop_timeout: float = 10.0
    call_wait: float = 20.0  # an HTTP call waits this long for its result, then answers 504
    read_timeout: float = 5.0  # a read that follows writes waits this long for the log's end
    application_version: str = "latest"
    application_manufacturer: str = "OpenFactoryIO"
    application_license: str = "Polyform Noncommercial License 1.0.0"
    # Signs outgoing commands and, when set, makes only signed ones run; never shown.
    command_secret: SigningKeys | None = field(default=None, repr=False)
    allowed_senders: frozenset[str] | None = None  # None: any sender may command this asset
    argument_limits: ArgumentLimits = field(default_factory=ArgumentLimits)  # larger commands are REJECTED
    storage: Mapping[str, StorageConfig] = field(default_factory=dict)  # from STORAGE, by name
    metrics_target: MetricsTarget | None = None  # registered with the platform's Prometheus registry

    def __post_init__(self) -> None:
        """Accept plain values (a secret string or list, any iterable of senders) too."""
        if self.command_secret is not None and not isinstance(self.command_secret, SigningKeys):
            object.__setattr__(self, "command_secret", SigningKeys(self.command_secret))
        if self.allowed_senders is not None and not isinstance(self.allowed_senders, frozenset):
            object.__setattr__(self, "allowed_senders", frozenset(self.allowed_senders))

    @property
    def group(self) -> str:
        return self.consumer_group or f"ofa-app-{self.asset_uuid}"
