"""The bench's Python load generator, used where wrk is not installed.

It forks a pool of client processes from the bench, which handles SIGTERM itself
(to stop its servers); a pool worker that inherited that handler could hang in
its exit when the pool terminated it, and the bench with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from harness.paths import REPO

ROUNDS = 40

# A child interpreter as the bench is: its own SIGTERM handler, then many short loads against
# a local server, each ending with the pool's terminate. Prints the requests served.
CHILD = textwrap.dedent(f"""
    import signal, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from bench.loadgen import python_load

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    def terminate(signum, frame):
        raise KeyboardInterrupt(f"signal {{signum}}")

    signal.signal(signal.SIGTERM, terminate)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ok = errors = 0
    for _ in range({ROUNDS}):
        load = python_load("127.0.0.1", server.server_address[1], "GET", "/", None, 0.05, 4)
        ok, errors = ok + load.ok, errors + load.errors
    print(ok, errors, flush=True)
""")


def test_the_python_load_generator_ends_every_pool_it_starts() -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and any pool worker left behind
        proc.communicate()
        raise AssertionError(f"{ROUNDS} loads did not end within 120 s: a pool never ended") from None
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err, err[-2000:]  # no worker unwound through the bench's handler
    ok, errors = map(int, out.split())
    assert ok > ROUNDS and errors == 0
