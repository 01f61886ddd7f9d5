"""What a gunicorn worker does beside serving requests, from ``post_worker_init``.

* A worker whose master died (``kill -9``) is an orphan: gunicorn's own check
  runs only between two waits of up to half its ``timeout`` (15 s by default),
  meanwhile the orphan would execute commands and hold the listening socket.
  A thread watches the parent pid instead: at once the orphan stops taking
  commands and lets go of its listening sockets (so a new server can bind
  the port), then wakes gunicorn's loop, which exits through ``worker_exit``
  (the runtime stops there). No signal handler is installed: gunicorn owns them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("flask_openfactory.gunicorn")

PARENT_CHECK = 0.1  # seconds between two looks at the parent pid
ORPHAN_EXIT_DEADLINE = 30.0  # seconds after which an orphan that did not exit is ended


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
                  "releasing the listening socket and exiting", pid, parent)
        for state in states:
            state.runtime.halt_commands()
        release_listeners(worker)
        # gunicorn's loop now finds its parent changed and exits through worker_exit
        # (which stops the runtime); should it not, this thread ends the process.
        if not stop.wait(ORPHAN_EXIT_DEADLINE):
            log.error("worker %s: still running %.0f s after its master died; exiting now", pid,
                      ORPHAN_EXIT_DEADLINE)
            os._exit(1)

    thread = threading.Thread(target=run, name="ofa-parent-watch", daemon=True)
    thread.start()
    return thread


def release_listeners(worker: Any) -> None:
    """Let go of the listening sockets now, so that a new server can bind the port.

    Closing them from this thread would not do: the worker's main thread waits
    in ``select`` on them, which keeps them open, and then fails on a closed
    descriptor. Instead each descriptor is pointed at an idle socket of its own
    (``accept`` answers "try again"), and the wait is woken through the
    worker's pipe: the kernel then drops the real listening socket.
    """
    for listener in list(getattr(worker, "sockets", None) or ()):
        try:
            fd = listener.fileno()
            idle = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            idle.bind(("127.0.0.1", 0))
            idle.listen(1)
            idle.setblocking(False)
            os.dup2(idle.fileno(), fd)
            idle.close()
        except OSError as exc:
            log.warning("could not release listening socket %s: %s", listener, exc)
    pipe = getattr(worker, "PIPE", None)
    if pipe:
        try:
            os.write(pipe[1], b".")
        except OSError:
            pass
