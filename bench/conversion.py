"""Argument conversion: this package's converter against pydantic v2 (the reference's).

Measures what the choice of converter costs: import time (every gunicorn
worker pays it at boot) and time per converted argument on the command path.
Run: ``python bench/conversion.py`` (pydantic comes with the test extra).
"""

from __future__ import annotations

import subprocess
import sys
import timeit
from typing import Any, Optional


def import_ms(module: str, runs: int = 5) -> float:
    """Best-of-runs import time in a fresh interpreter."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
             for _ in range(runs)]
    return min(times) * 1000.0


def per_call_us(func: Any, arg: str, number: int = 50_000) -> float:
    return min(timeit.repeat(lambda: func(arg), number=number, repeat=3)) / number * 1e6


def main() -> None:
    from pydantic import TypeAdapter

    from flask_openfactory.wire.conversion import text_converter

    base = import_ms("flask_openfactory")
    print(f"import flask_openfactory (converter included): {base:.1f} ms")
    print(f"  + import pydantic and build one TypeAdapter: "
          f"{import_ms('flask_openfactory, pydantic; pydantic.TypeAdapter(int)') - base:+.1f} ms per worker boot")
    cases: list[tuple[Any, str]] = [(int, "1_000"), (float, "2.5e3"), (bool, "yes"),
                                    (Optional[int], "42"),  # noqa: UP045 (what a caller may write)
                                    (list[int], '[1, "2", 3.0]')]
    for annotation, text in cases:
        ours = text_converter(annotation)
        adapter = TypeAdapter(annotation)
        value: Any = text
        if str(annotation).startswith("list"):
            import json

            def theirs(t: str, adapter: TypeAdapter[Any] = adapter) -> Any:
                return adapter.validate_python(json.loads(t))
        else:
            theirs = adapter.validate_python
        print(f"{str(annotation):22} {text!r:16} ours {per_call_us(ours, value):6.2f} us   "
              f"pydantic {per_call_us(theirs, value):6.2f} us")


if __name__ == "__main__":
    main()
