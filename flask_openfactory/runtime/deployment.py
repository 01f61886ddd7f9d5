"""This process among the processes of its deployment, and its part in the executor role.

A deployment is one start of the asset (a gunicorn master and its workers, or
one process). Its members share a membership on the host: the first to join
announces the asset, the last to leave says it is unavailable, and candidates
for the executor role stand in it, so that a retiring executor hands the role
over to a live candidate instead of leaving nobody executing.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from ..transports import Transport
from ..transports.locks import Membership
from .logs import AssetLog
from .processes import process_identity
from .settings import CANDIDATE_GRACE, DEPLOYMENT_LOCK_SECONDS, STANDALONE, RuntimeSettings


class Deployment:
    """One process's membership of its deployment (rebuilt in a forked child)."""

    def __init__(
        self,
        settings: RuntimeSettings,
        *,
        log: AssetLog,
        stopping: threading.Event,
        owns: Callable[[], bool],
        publish_unavailable: Callable[[float], None],
    ) -> None:
        self._settings = settings
        self._log = log
        self._stopping = stopping
        self._owns = owns  # whether this process's dispatcher holds the command log now
        self._publish_unavailable = publish_unavailable
        self.name = STANDALONE + process_identity(os.getpid())
        self.eligible: Callable[[], bool] = lambda: True
        self.retiring = False  # stop() began: this process hands the role over
        self._membership: Membership | None = None
        self._standing = False  # a candidate for the executor role (see may_execute)
        self._successor_seen: float | None = None  # when a retiring executor first saw a candidate

    def join(self, transport: Transport, *, digest: str, announce: Callable[[], None]) -> None:
        """Become one of the deployment's processes; the first of a start announces it.

        The marker names the start (the gunicorn master, or this process) and
        what is announced (``digest``): a reload with changed methods announces again.
        """
        settings = self._settings
        membership = self._membership = transport.membership(settings.asset_uuid)
        marker = f"{self.name} {digest}"
        with membership.exclusive(DEPLOYMENT_LOCK_SECONDS):
            # Before this process serves a call: a first executor never starts past one.
            transport.mark_start(settings.asset_uuid, settings.group)
            membership.join()
            if settings.execute_commands and self.eligible():
                membership.stand()
                self._standing = True
            if membership.marker() == marker:
                return
            announce()
            pending = transport.flush(DEPLOYMENT_LOCK_SECONDS / 2)
            if pending:  # not durable: the next process to start announces again
                self._log.warning("%d start-up record(s) not yet delivered; another start will repeat them",
                                  pending)
                return
            membership.set_marker(marker)
        self._log.info("announced the asset (start-up records written once for this deployment)")

    def leave(self, *, publish_unavailable: bool, budget: float) -> None:
        """The last process of the deployment to stop says the asset is unavailable."""
        membership, self._membership = self._membership, None
        if membership is None:
            return
        try:
            with membership.exclusive(max(0.1, budget)):
                membership.leave()
                if membership.others_present():
                    return
                if self.name.startswith(STANDALONE):
                    membership.set_marker("")  # the next start of this process announces again
                if publish_unavailable:
                    self._publish_unavailable(budget)
        except Exception:
            self._log.exception("could not leave the deployment cleanly")

    def close(self, transport: Transport, budget: float) -> bool:
        """For a server whose own processes are gone: publish ``UNAVAILABLE`` unless
        another server on this host still serves the asset."""
        membership = transport.membership(self._settings.asset_uuid)
        with membership.exclusive(budget):
            if membership.others_present():
                self._log.info("another server on this host still serves the asset: avail stays AVAILABLE")
                return False
            self._publish_unavailable(budget)
        return True

    def may_execute(self) -> bool:
        """Whether this process may hold the executor role now (asked by the dispatcher each poll).

        A process about to stop (a gunicorn worker told to exit, or ``stop``
        begun) withdraws its candidacy: it never takes the role, and hands it
        over as soon as another process could take it. Until then it keeps
        executing, so that a reload whose new workers are still booting leaves
        no gap with nobody executing.
        """
        if self.eligible() and not self.retiring and not self._stopping.is_set():
            return True
        membership = self._membership
        if membership is None:
            return False
        if self._standing:
            membership.withdraw()
            self._standing = False
        if not self._owns() or self._stopping.is_set():
            return False
        if not membership.other_candidates():
            self._successor_seen = None
            return True
        # Processes told to stop at the same moment (a reload) withdraw within a poll or
        # two: hand over once a candidate has stood for the grace time, not to a stale one.
        now = time.monotonic()
        if self._successor_seen is None:
            self._successor_seen = now
        return now - self._successor_seen < CANDIDATE_GRACE

    def linger(self, seconds: float) -> None:
        """Keep executing until another process took the role (a successor is booting), bounded."""
        if seconds <= 0 or not self._owns():
            return
        self._log.info("stopping: executing until another process takes the command log (at most %.1fs)",
                       seconds)
        deadline = time.monotonic() + seconds
        while self._owns() and time.monotonic() < deadline:
            self._stopping.wait(0.02)
