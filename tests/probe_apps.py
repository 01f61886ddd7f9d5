"""The test suite's own gunicorn apps: where gunicorn finds them, and what the probe app records.

``tests/gunicorn_app.py`` (the probe) and ``tests/gunicorn_task_app.py`` are
loaded by gunicorn with ``--pythonpath tests``: the servers of the tests get
``pythonpath=TESTS``. Each execution of a probe method appends one line to a
side-effect file, read back here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PROBE_APP", "TESTS", "SideEffect", "executions", "side_effects"]

TESTS = Path(__file__).resolve().parent
PROBE_APP = "gunicorn_app:create_app()"  # tests/gunicorn_app.py, loaded with --pythonpath tests


@dataclass(frozen=True)
class SideEffect:
    event: str
    tag: str
    pid: int
    at: float


def side_effects(path: Path) -> list[SideEffect]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        event, tag, pid, at = line.split()
        found.append(SideEffect(event, tag, int(pid), float(at)))
    return found


def executions(path: Path) -> Counter[str]:
    """Completed executions per tag."""
    return Counter(e.tag for e in side_effects(path) if e.event == "done")
