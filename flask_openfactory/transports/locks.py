"""Host locks that elect one process per asset: ``flock`` on a file.

The kernel releases the lock the moment its holder dies (even by SIGKILL), so
takeover is as fast as the waiter's next try. A lock inherited through fork is
closed in the child without unlocking: the parent keeps holding it, and the
child never executes on the parent's behalf.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import threading
import weakref

from .base import TransportError

_locks: "weakref.WeakSet[HostLock]" = weakref.WeakSet()


def _forget_inherited() -> None:
    for lock in list(_locks):
        lock._forget()
    _locks.clear()


os.register_at_fork(after_in_child=_forget_inherited)


def lock_path(directory: str | None, *parts: str, prefix: str = "") -> str:
    """A file per (backend, group, asset): names hashed so any UUID is a safe file name."""
    base = directory or os.path.join(tempfile.gettempdir(), "flask-openfactory-locks")
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:32]
    return os.path.join(base, f"{prefix}executor-{digest}.lock")


class HostLock:
    def __init__(self, path: str) -> None:
        self.path = path
        self._pid = os.getpid()
        self._mutex = threading.Lock()
        self._held = False
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise TransportError(f"cannot open the executor lock file {path}: {exc}") from exc
        _locks.add(self)

    @property
    def held(self) -> bool:
        return self._held and self._pid == os.getpid()

    def try_acquire(self) -> bool:
        with self._mutex:
            if self._fd < 0 or self._pid != os.getpid():
                return False
            if self._held:
                return True
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            except OSError as exc:
                raise TransportError(f"cannot lock {self.path}: {exc}") from exc
            self._held = True
            return True

    def release(self) -> None:
        with self._mutex:
            if self._held and self._fd >= 0 and self._pid == os.getpid():
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._held = False

    def close(self) -> None:
        self.release()
        with self._mutex:
            if self._fd >= 0 and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = -1

    def _forget(self) -> None:
        """In a forked child: drop the descriptor, never the parent's lock."""
        self._mutex = threading.Lock()
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = -1
        self._held = False
