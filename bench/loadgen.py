"""HTTP load: ``wrk`` when installed, else this small Python generator.

The Python generator opens a connection per request (gunicorn's sync workers
close every connection anyway), from several processes so that the GIL of
one client process does not cap the server. It is slower than wrk per
request, so the two are never mixed within one comparison.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import resource
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass


@dataclass
class Load:
    ok: int
    errors: int
    seconds: float
    tool: str
    client_cpu_seconds: float = 0.0  # the load generator's own CPU (wrk: a child process), when known

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0


def _request_bytes(host: str, port: int, method: str, path: str, body: str | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "User-Agent: bench-loadgen",
             "Accept: */*", "Connection: close"]
    payload = (body or "").encode("utf-8")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + payload


def _thread(host: str, port: int, request: bytes, stop_at: float, out: list[int]) -> None:
    ok = errors = 0
    while time.monotonic() < stop_at:
        try:
            with socket.create_connection((host, port), timeout=10) as sock:
                sock.sendall(request)
                first = b""
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    if not first:
                        first = chunk
            if first[9:10] == b"2":
                ok += 1
            else:
                errors += 1
        except OSError:
            errors += 1
    out.extend((ok, errors))


def _process(args: tuple[str, int, bytes, float, int]) -> tuple[int, int, float]:
    host, port, request, duration, threads = args
    started = time.monotonic()
    stop_at = started + duration
    outs: list[list[int]] = [[] for _ in range(threads)]
    workers = [threading.Thread(target=_thread, args=(host, port, request, stop_at, o)) for o in outs]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(o[0] for o in outs), sum(o[1] for o in outs), time.monotonic() - started


def _default_signals() -> None:
    """A forked pool worker must die of the pool's SIGTERM: the bench's own handler (unwinding to
    its finally blocks) inherited through the fork left a worker hanging in its exit, and the
    pool's ``terminate`` waiting for it for ever."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the bench, which ends the pool


def python_load(host: str, port: int, method: str, path: str, body: str | None, duration: float,
                connections: int, processes: int = 2) -> Load:
    request = _request_bytes(host, port, method, path, body)
    threads = max(1, connections // processes)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(processes, initializer=_default_signals) as pool:
        parts = pool.map(_process, [(host, port, request, duration, threads)] * processes)
    return Load(sum(p[0] for p in parts), sum(p[1] for p in parts), max(p[2] for p in parts), "python")


_WRK_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk_load(wrk: str, host: str, port: int, method: str, path: str, body: str | None, duration: float,
             connections: int) -> Load:
    script = "\n".join([
        f'wrk.method = "{method}"',
        *([f"wrk.body = {json.dumps(body)}", 'wrk.headers["Content-Type"] = "application/json"']
          if body is not None else []),
    ])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=True) as lua:
        lua.write(script + "\n")
        lua.flush()
        proc = subprocess.run(
            [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "-s", lua.name,
             f"http://{host}:{port}{path}"],
            capture_output=True, text=True, check=False, timeout=duration + 60,
        )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    out = proc.stdout
    total = _WRK_TOTAL.search(out)
    if proc.returncode != 0 or total is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out}{proc.stderr}")
    requests, seconds = int(total.group(1)), float(total.group(2)) * _UNITS[total.group(3)]
    non2xx = int(m.group(1)) if (m := _WRK_NON2XX.search(out)) else 0
    socket_errors = _WRK_ERRORS.search(out)
    errors = non2xx + (sum(int(g) for g in socket_errors.groups()) if socket_errors else 0)
    return Load(requests - non2xx, errors, seconds, "wrk", client_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description="the Python load generator, on its own")
    parser.add_argument("url_path", nargs="?", default="/")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    load = python_load("127.0.0.1", args.port, args.method, args.url_path, args.body, args.duration,
                       args.connections)
    print(json.dumps({"ok": load.ok, "errors": load.errors, "seconds": load.seconds, "rps": load.rps}))


if __name__ == "__main__":
    main()
