"""HTTP load from threads of the test process: GETs in turn, statuses and errors counted."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence

import requests

__all__ = ["HttpLoad"]


class HttpLoad:
    """Threads that GET ``paths`` in turn until stopped or ``max_requests`` each."""

    def __init__(self, base_url: str, paths: Sequence[str], *, threads: int = 3,
                 max_requests: int = 2000, timeout: float = 30.0) -> None:
        self.base_url = base_url
        self.paths = list(paths)
        self.max_requests = max_requests
        self.timeout = timeout
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"http-load-{i}", daemon=True)
                         for i in range(threads)]

    @property
    def count(self) -> int:
        with self._lock:
            return sum(self.statuses.values()) + len(self.errors)

    def start(self) -> HttpLoad:
        for thread in self._threads:
            thread.start()
        return self

    def _run(self) -> None:
        for i in range(self.max_requests):
            if self._stop.is_set():
                return
            path = self.paths[i % len(self.paths)]
            try:
                status = requests.get(self.base_url + path, timeout=self.timeout).status_code
            except Exception as exc:  # counted and reported by the test, never raised in the thread
                with self._lock:
                    self.errors.append(f"GET {path}: {type(exc).__name__}: {exc}")
                continue
            with self._lock:
                self.statuses[status] += 1

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                raise AssertionError(f"HTTP load thread {thread.name} did not end within {timeout:g} s")
