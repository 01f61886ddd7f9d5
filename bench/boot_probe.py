"""One worker's boot, timed from the first line: ``python bench/boot_probe.py ext|plain``.

Run in a fresh interpreter because imports are most of a worker's boot and
are cached after the first. Measures what a gunicorn worker does before it
serves: import the app, build it, and (with the extension) start the runtime
as ``post_worker_init`` does. Prints JSON.
"""

import time

T0 = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    kind = sys.argv[1]
    runtime = None
    if kind == "ext":
        from harness.apps import ext_app

        app = ext_app()
        runtime = app.extensions["openfactory"].runtime
        runtime.start()
    else:
        from harness.apps import plain_app

        app = plain_app()
    booted = time.perf_counter()
    owns = bool(runtime is not None and runtime.owns_command_log)
    print(json.dumps({"ms": (booted - T0) * 1000.0, "owns_commands": owns}), flush=True)
    if runtime is not None:
        runtime.stop(10, publish_unavailable=False)


if __name__ == "__main__":
    main()
