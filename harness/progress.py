"""Progress lines of a long run (benchmarks, soak), on stderr so that stdout stays the report."""

from __future__ import annotations

import sys
import time

__all__ = ["log"]


def log(message: str) -> None:
    """Progress on stderr, so stdout stays the report."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
