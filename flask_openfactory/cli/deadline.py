"""Bounded transport calls for the CLI: a worker thread, and a deadline after which it is abandoned.

A Kafka cluster that is down, or a sqlite file that cannot be opened, must give
a one-line error within the command's timeout, never a hang: every transport
call of a ``flask ofa`` command runs on the session's worker and is waited for
with a deadline.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import TypeVar

from ..runtime import AssetRuntime

T = TypeVar("T")

# Grace on top of a command's own timeout before a blocked transport call is abandoned;
# sending also opens a follower of the target's log (a Kafka consumer) before it waits.
GRACE = 1.0
SEND_GRACE = 5.0
CHECK_TIMEOUT = 5.0


class Deadline(TimeoutError):
    """A transport call that did not return in time; its thread is abandoned."""


class _Worker:
    """One daemon thread that runs a command's transport calls in turn.

    One thread, so that per-thread clients (sqlite connections) are opened once
    and closed by ``close`` on the thread that opened them; a daemon, so that a
    call that never returns cannot keep the process from exiting.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name="ofa-cli", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    def submit(self, job: Callable[[], None] | None) -> None:
        """Queue a call; None asks the worker to end after the calls before it."""
        self._jobs.put(job)

    def stop(self, timeout: float) -> None:
        self._jobs.put(None)
        self.thread.join(timeout)


class Session:
    """The CLI's use of the runtime's transport, released when the command ends.

    A transport call that hangs past its deadline is abandoned with its worker;
    after that, releasing the transport could block on the same lock, so it is skipped.
    """

    def __init__(self, runtime: AssetRuntime) -> None:
        self.runtime = runtime
        self.hung = False
        self._worker: _Worker | None = None

    def run(self, fn: Callable[[], T], timeout: float, what: str) -> T:
        """Run ``fn`` on the worker; raise ``Deadline`` if it outlives ``timeout``."""
        outcome: list[T] = []
        failure: list[BaseException] = []
        done = threading.Event()

        def job() -> None:
            try:
                outcome.append(fn())
            except BaseException as exc:  # handed to the caller's thread
                failure.append(exc)
            finally:
                done.set()

        if self._worker is None:
            self._worker = _Worker()
        self._worker.submit(job)
        if not done.wait(timeout):
            self._worker.submit(None)  # the worker ends if the stuck call ever returns
            self.hung, self._worker = True, None
            raise Deadline(f"{what} did not return within {timeout:g} s")
        if failure:
            raise failure[0]
        return outcome[0]

    def close(self) -> None:
        """Flush and close a transport this command created; never one a started runtime uses."""
        try:
            if not self.hung and not self.runtime.started and self._worker is not None:
                self.run(lambda: self.runtime.stop(timeout=2.0, publish_unavailable=False), 3.0, "close")
        except Exception:
            pass
        finally:
            if self._worker is not None:
                self._worker.stop(1.0)
                self._worker = None
