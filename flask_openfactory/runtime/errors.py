"""The errors a read or a call through the runtime raises when the log cannot answer in time.

All are ``TransportError``s (the HTTP layer maps them to 503/504); the call
errors carry what the caller needs to fetch the result later.
"""

from __future__ import annotations

import os

from ..transports import TransportError


class StaleRead(TransportError):
    """A read that must follow writes could not be brought up to date in time."""


class RuntimeStopped(TransportError):
    """A write after this process stopped the runtime: nothing was published, and no producer reopened.

    The process is going away (a worker's exit, a test's teardown); the caller
    retries elsewhere, hence a ``Retry-After`` on the HTTP answer.
    """

    retry_after: float = 5.0  # seconds: a hint for the caller, as for a runtime not started yet

    def __init__(self, asset_uuid: str) -> None:
        super().__init__(f"the OpenFactory runtime of {asset_uuid!r} was stopped in this process (pid {os.getpid()}); "
                         f"nothing was published: retry on another worker, or start the runtime again")


class CallPending(TransportError):
    """A call is in the log but its result did not come within the wait; it is not lost."""

    ran: bool | None = None  # unknown: it may not have run yet

    def __init__(self, correlation_id: str, waited: float, message: str | None = None) -> None:
        super().__init__(message or (
            f"no result within {waited:g}s: the call {correlation_id} is in the log and runs when the "
            f"executor reaches it; fetch its result later by its correlation id"))
        self.correlation_id = correlation_id
        self.waited = waited


class ResultNotRecorded(CallPending):
    """The method ran, and the log refused its result: never "nothing happened", never run again."""

    ran = True

    def __init__(self, correlation_id: str, method: str, reason: str) -> None:
        super().__init__(correlation_id, 0.0, (
            f"{method} ran (call {correlation_id}), but the asset's log refused its result: {reason}. "
            f"The result is written as soon as the log takes writes again; fetch it by its correlation "
            f"id. A retry with the same correlation id does not run it again; one without is a new call"))
        self.method = method
        self.reason = reason
