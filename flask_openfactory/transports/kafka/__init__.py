"""``kafka://host:port[,host:port]``: the asset on a real OpenFactory platform.

The names importable from here before the package was split by job. Tunables
such as ``STUCK_REPORT`` are read where they are used: patch them on their own
module (``producer``), not on this package.
"""

from .client import END_SCAN_SECONDS, KafkaClient
from .config import CONSUMER_DEFAULTS, DEFAULT_TOPIC, PRODUCER_DEFAULTS, SECRET_HINTS, mask, parse_bootstrap
from .election import KafkaGroupReader, KafkaLockedReader
from .follower import KafkaFollower
from .messages import ATTRIBUTE_KIND, FETCH_LIMIT, KIND_HEADER, ORIGIN_HEADER
from .producer import PURGE_WAIT, STUCK_AFTER, STUCK_REPORT, KafkaProducing
from .reader import PartitionReader
from .snapshot import CALLS_SCAN_SECONDS
from .transport import KafkaTransport
from .watch import EndWatch, QuietKafkaLog

__all__ = [
    "ATTRIBUTE_KIND",
    "CALLS_SCAN_SECONDS",
    "CONSUMER_DEFAULTS",
    "DEFAULT_TOPIC",
    "END_SCAN_SECONDS",
    "FETCH_LIMIT",
    "KIND_HEADER",
    "ORIGIN_HEADER",
    "PRODUCER_DEFAULTS",
    "PURGE_WAIT",
    "SECRET_HINTS",
    "STUCK_AFTER",
    "STUCK_REPORT",
    "EndWatch",
    "KafkaClient",
    "KafkaFollower",
    "KafkaGroupReader",
    "KafkaLockedReader",
    "KafkaProducing",
    "KafkaTransport",
    "PartitionReader",
    "QuietKafkaLog",
    "mask",
    "parse_bootstrap",
]
