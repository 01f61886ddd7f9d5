"""What a gunicorn worker does beside serving requests, from ``post_worker_init``.

* A runtime that could not start (the log faulty at that moment) is retried
  in the background: an idle worker must heal without waiting for a request.
* A worker whose master died (``kill -9``) is an orphan: gunicorn's own check
  runs only between two waits of up to half its ``timeout`` (15 s by default),
  meanwhile the orphan would execute commands and hold the listening socket.
  A thread watches the parent pid instead: at once the orphan stops taking
  commands and closes its listening sockets (so a new server can bind the
  port), then stops its runtime and exits. No signal handler is installed:
  gunicorn owns them.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Iterable

log = logging.getLogger("flask_openfactory.gunicorn")

START_RETRY = 1.0  # seconds between start attempts of a runtime that failed to start
PARENT_CHECK = 0.1  # seconds between two looks at the parent pid
ORPHAN_STOP_BUDGET = 3.0  # seconds an orphan spends finishing its command in flight


def keep_starting(states: Iterable[Any]) -> threading.Thread | None:
    """Retry the start of runtimes that are not started, until they are (a daemon thread)."""
    pending = [s for s in states if not s.runtime.started]
    if not pending:
        return None
    pid = os.getpid()

    def run() -> None:
        stop = threading.Event()
        while pending and os.getpid() == pid and not stop.wait(START_RETRY):
            for state in list(pending):
                try:
                    state.runtime.start()
                except Exception:  # the runtime logged why; its readiness says so too
                    continue
                pending.remove(state)
                log.info("worker %s: runtime started after an earlier failure", pid)

    thread = threading.Thread(target=run, name="ofa-start-retry", daemon=True)
    thread.start()
    return thread


def watch_parent(worker: Any, states: Iterable[Any]) -> threading.Thread:
    """End this worker's duties at once when its master is gone."""
    states = list(states)
    parent = int(getattr(worker, "ppid", 0) or os.getppid())
    pid = os.getpid()

    def run() -> None:
        stop = threading.Event()
        while not stop.wait(PARENT_CHECK):
            if os.getpid() != pid:
                return
            if os.getppid() != parent:
                break
        log.error("worker %s: the gunicorn master (pid %s) is gone: no more commands here; "
                  "closing the listening socket and exiting", pid, parent)
        for state in states:
            state.runtime.halt_commands()
        for sock in list(getattr(worker, "sockets", None) or ()):
            try:
                sock.close()
            except OSError:
                pass
        for state in states:
            try:
                state.runtime.stop(ORPHAN_STOP_BUDGET, publish_unavailable=False)
            except Exception:
                log.exception("worker %s: stopping the runtime of an orphan failed", pid)
        logging.shutdown()
        os._exit(0)

    thread = threading.Thread(target=run, name="ofa-parent-watch", daemon=True)
    thread.start()
    return thread
