"""How long to wait before trying again something that keeps failing.

One rule for every retry loop of the package: the first wait is ``base``, each
further consecutive failure doubles it, and it never exceeds ``limit``. The
exponent is bounded too, so a failure that lasts for days cannot overflow a float.
"""

from __future__ import annotations

# Doublings at most: beyond this the wait stops growing even below ``limit``.
MAX_DOUBLINGS = 6


def backoff_delay(base: float, attempt: int, limit: float, *, max_doublings: int = MAX_DOUBLINGS) -> float:
    """The wait before retry ``attempt`` (0: after the first failure): ``base`` doubled
    ``attempt`` times (at most ``max_doublings``), and at most ``limit``."""
    return min(limit, base * 2.0 ** min(attempt, max_doublings))


class Backoff:
    """Consecutive failures of one retry loop, and the wait each one calls for.

    ``failed`` counts a failure and returns how long to wait before the next try;
    ``succeeded`` starts the count again. The first failure already waits ``2 * base``
    (the loops that use it have always counted that way).
    """

    def __init__(self, base: float, limit: float) -> None:
        self.base = base
        self.limit = limit
        self.failures = 0

    def failed(self) -> float:
        self.failures += 1
        return backoff_delay(self.base, self.failures, self.limit)

    def succeeded(self) -> None:
        self.failures = 0
