"""Host locks that elect one process per asset: ``flock`` on a file.

The kernel releases the lock the moment its holder dies (even by SIGKILL), so
takeover is as fast as the waiter's next try. A lock inherited through fork is
closed in the child without unlocking: the parent keeps holding it, and the
child never executes on the parent's behalf.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator

from .errors import TransportError

_locks: weakref.WeakSet[HostLock] = weakref.WeakSet()
_members: weakref.WeakSet[Membership] = weakref.WeakSet()


def _forget_inherited() -> None:
    for lock in list(_locks):
        lock._forget()
    _locks.clear()
    for member in list(_members):
        member._forget()
    _members.clear()


os.register_at_fork(after_in_child=_forget_inherited)


def lock_path(directory: str | None, *parts: str, prefix: str = "", kind: str = "executor") -> str:
    """A file per (backend, group, asset): names hashed so any UUID is a safe file name."""
    base = directory or os.path.join(tempfile.gettempdir(), "flask-openfactory-locks")
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:32]
    return os.path.join(base, f"{prefix}{kind}-{digest}.lock")


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


class Membership:
    """Who serves one asset on this host: the processes holding a shared ``flock``.

    The start-up records are written once per start of the deployment and
    ``UNAVAILABLE`` only when its last process stops; both decisions are taken
    under ``exclusive()``, a second lock, so that a process joining and one
    leaving never decide at the same time. A marker file says which start was
    announced. A killed member's lock goes with it.
    """

    def __init__(self, base: str) -> None:
        self.base = base
        self._pid = os.getpid()
        self._member_fd = -1
        self._candidate_fd = -1
        self._mutex = threading.Lock()
        _members.add(self)

    def _forget(self) -> None:
        """In a forked child: close the inherited descriptor (the parent stays a member)."""
        self._mutex = threading.Lock()
        for fd in (self._member_fd, self._candidate_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._member_fd = self._candidate_fd = -1

    def _open(self, suffix: str) -> int:
        path = self.base + suffix
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise TransportError(f"cannot open the deployment lock file {path}: {exc}") from exc

    @contextlib.contextmanager
    def exclusive(self, timeout: float) -> Iterator[None]:
        """Hold the deployment's start/stop lock (bounded wait: a TransportError after ``timeout``)."""
        with self._mutex:
            fd = self._open(".startup")
            try:
                deadline = time.monotonic() + timeout
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise TransportError(
                                f"another process held {self.base}.startup for over {timeout:g}s") from None
                        time.sleep(0.01)
                yield
            finally:
                os.close(fd)  # closing drops the lock

    def join(self) -> None:
        if self._member_fd >= 0 and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._member_fd = self._open(".members")
        fcntl.flock(self._member_fd, fcntl.LOCK_SH)

    def leave(self) -> None:
        self.withdraw()
        if self._member_fd >= 0 and self._pid == os.getpid():
            os.close(self._member_fd)
        self._member_fd = -1

    def others_present(self) -> bool:
        """Whether a process other than this one is a member (call after ``leave``)."""
        return self._held_by_others(".members")

    def stand(self) -> None:
        """Be a candidate for the executor role (a process not about to stop)."""
        if self._candidate_fd >= 0 and self._pid == os.getpid():
            return
        self._candidate_fd = self._open(".candidates")
        fcntl.flock(self._candidate_fd, fcntl.LOCK_SH)

    def withdraw(self) -> None:
        if self._candidate_fd >= 0 and self._pid == os.getpid():
            os.close(self._candidate_fd)
        self._candidate_fd = -1

    def other_candidates(self) -> bool:
        """Whether another process could take the executor role now (call after ``withdraw``)."""
        return self._held_by_others(".candidates")

    def _held_by_others(self, suffix: str) -> bool:
        fd = self._open(suffix)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def marker(self) -> str:
        try:
            with open(self.base + ".announced", encoding="utf-8") as handle:
                return handle.read()
        except FileNotFoundError:
            return ""
        except OSError as exc:
            raise TransportError(f"cannot read {self.base}.announced: {exc}") from exc

    def set_marker(self, text: str) -> None:
        path = self.base + ".announced"
        try:
            with open(path + ".tmp", "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(path + ".tmp", path)
        except OSError as exc:
            raise TransportError(f"cannot write {path}: {exc}") from exc


def membership_base(directory: str | None, *parts: str) -> str:
    """Where one asset's deployment files live (hashed name, like the executor locks)."""
    return lock_path(directory, *parts, kind="deployment")[: -len(".lock")]
