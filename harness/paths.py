"""Where the repository is: servers and benchmarks run from its root."""

from __future__ import annotations

from pathlib import Path

__all__ = ["REPO"]

REPO = Path(__file__).resolve().parent.parent
