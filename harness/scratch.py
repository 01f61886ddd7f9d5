"""Scratch space and names of one run: directories removed at exit, topic and asset names never reused."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time

__all__ = ["scratch_dir", "unique_name"]

_SCRATCH: list[str] = []


def scratch_dir(prefix: str) -> str:
    """A fresh directory (lock dirs, logs) under one per-run base, removed at exit."""
    if not _SCRATCH:
        base = tempfile.mkdtemp(prefix="flask-openfactory-bench-")
        _SCRATCH.append(base)
        atexit.register(shutil.rmtree, base, True)
    return tempfile.mkdtemp(prefix=prefix, dir=_SCRATCH[0])


def unique_name(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
