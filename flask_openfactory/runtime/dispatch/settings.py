"""What one command dispatcher runs with: its settings and the limit on its retries.

Apart from the dispatcher so that the admission rules, the result recorder and
the dispatcher itself can all read them without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...wire.commands import ArgumentLimits
from ...wire.signing import MAX_CLOCK_SKEW, SigningKeys

# A reader that failed is retried at least this often: a log that heals (a file put
# back, a folder writable again, a broker back) is resumed within seconds, unasked.
MAX_RETRY_DELAY = 2.0


@dataclass(slots=True)
class DispatchSettings:
    asset_uuid: str
    group: str
    max_age: float = 300.0  # seconds; older commands are REJECTED as expired
    timeout: float = 60.0  # per command; reported as ERROR when exceeded
    concurrency: int = 1  # commands run in order by default: machines care
    dedupe_size: int = 10_000
    poll_interval: float = 0.2
    # While commands flow, what is done is committed at most this often (each commit is a request
    # to the broker and a wake-up of its client's threads: about 12 % of a call's CPU here when
    # made for every call); a quiet log's next poll, a stop and a handover commit at once.
    commit_interval: float = 0.5
    retry_backoff: float = 0.5
    signing_keys: SigningKeys | None = field(default=None, repr=False)  # None: signatures not checked
    allowed_senders: frozenset[str] | None = None  # None: any sender
    max_clock_skew: float = MAX_CLOCK_SKEW  # signed commands from further ahead are refused
    argument_limits: ArgumentLimits = field(default_factory=ArgumentLimits)  # bigger commands are REJECTED
