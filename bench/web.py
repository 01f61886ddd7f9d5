"""Real gunicorn servers (``-w 2``, sync workers) for the HTTP and memory figures.

Both apps run under the same command line and the same config module (the
extension's hooks, which do nothing for an app without the extension); only
the app differs. Both servers stay up and the load alternates between them
in short slices, the idle one frozen with SIGSTOP: pairs of slices seconds
apart see the same machine (which may be shared), and a frozen server's
background threads cannot steal CPU from the one under load. Every process
is signalled by the pid we started.
"""


from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from harness.measured_gunicorn import CALL_WAIT, Gunicorn, Server, ext_env
from harness.progress import log
from harness.scratch import scratch_dir, unique_name

from .common import ROOT
from .loadgen import Load, python_load, wrk_load

if TYPE_CHECKING:
    from .common import Broker


class ReferenceServer(Server):
    """A plain Flask app on ``werkzeug.serving.make_server``, as the reference implementation serves."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.proc: subprocess.Popen[str] | None = None

    def _pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def start(self, ready_path: str, timeout: float = 30.0) -> ReferenceServer:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.reference_server"], env=self.env, cwd=ROOT,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the port, once bound
        if not line.strip().isdigit():
            self.close()
            raise RuntimeError(f"the reference server did not start (exit code {self.proc and self.proc.poll()})")
        self.port = int(line)
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{ready_path}", timeout=timeout) as r:
            if r.status != 200:
                raise RuntimeError(f"the reference server answered {r.status}")
        log(f"reference server (werkzeug make_server, single-threaded): pid {self.proc.pid}, port {self.port}")
        return self

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if self.paused:
            os.kill(proc.pid, signal.SIGCONT)
            self.paused = False
        proc.kill()
        proc.wait(timeout=10)


@dataclass
class HttpResult:
    """Per-slice loads; the user-route figures are medians of the paired ratios."""

    tool: str
    ext_user: list[Load] = field(default_factory=list)
    plain_user: list[Load] = field(default_factory=list)
    ref_user: list[Load] = field(default_factory=list)  # werkzeug make_server, as the reference serves
    # the user route's floor: plain Flask whose workers each follow the log as the extension's do (raw_call.py)
    floor_user: list[Load] = field(default_factory=list)
    ext_method: list[Load] = field(default_factory=list)
    ext_rss: float = 0.0
    plain_rss: float = 0.0
    ext_cpu_us: list[float] = field(default_factory=list)  # server CPU per request, per slice
    plain_cpu_us: list[float] = field(default_factory=list)
    ref_cpu_us: list[float] = field(default_factory=list)
    floor_user_cpu_us: list[float] = field(default_factory=list)
    method_cpu_us: list[float] = field(default_factory=list)
    # the least a call through the log costs here: the hand-written app (harness/raw_call.py)
    floor_method: list[Load] = field(default_factory=list)
    floor_cpu_us: list[float] = field(default_factory=list)
    # method calls per second and server CPU per call: transport and worker class -> (req/s, µs)
    method_variants: dict[str, tuple[float, float]] = field(default_factory=dict)
    # user-route slices measured again because one worker served (nearly) all of the load: server -> count
    lopsided: dict[str, int] = field(default_factory=dict)
    lopsided_retries: int = 0  # at most this many times per slice


LOPSIDED_SHARE = 0.2  # a worker with less of the workers' CPU than this did not take its share of connections
LOPSIDED_RETRIES = 4


def _lopsided(server: Server, before: dict[int, float], after: dict[int, float]) -> bool:
    """Whether one of a multi-worker server's workers sat out the slice.

    wrk opens its connections at once and keep-alive holds each on the worker
    that accepted it; gunicorn's workers race for the accepts, and now and
    then one takes all of them. Such a slice measures one worker with eight
    threads contending for its GIL (a third to half the usual rate, for any
    app), not the app: it is measured again, the same way for every server.
    """
    used = [after[pid] - before[pid] for pid in server.worker_processes() if pid in before and pid in after]
    total = sum(used)
    return len(used) > 1 and total > 0 and min(used) < LOPSIDED_SHARE * total


class LoadRunner:
    """The chosen load generator, with the same settings for every target."""

    def __init__(self, wrk: str | None, connections: int) -> None:
        self.wrk = wrk
        self.connections = connections
        self.tool = "wrk" if wrk else "python"

    def run(self, port: int, method: str, path: str, body: str | None, duration: float) -> Load:
        if self.wrk:
            return wrk_load(self.wrk, "127.0.0.1", port, method, path, body, duration, self.connections)
        return python_load("127.0.0.1", port, method, path, body, duration, self.connections)

    def measure(self, port: int, method: str, path: str, body: str | None, duration: float,
                warmup: float) -> Load:
        if warmup > 0:
            self.run(port, method, path, body, warmup)
        load = self.run(port, method, path, body, duration)
        if load.ok == 0 or load.errors > load.ok * 0.01:
            raise RuntimeError(f"{method} {path}: {load.ok} ok, {load.errors} errors")
        return load


def _check_method_route(port: int, path: str) -> None:
    """The method route must answer OK before its throughput means anything.

    No retry: every process marks the command log's start before it serves, so a
    call right after start is never skipped (a 504 here is a fault to see).
    """
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=CALL_WAIT + 10) as response:
        body = json.loads(response.read())
    if body.get("status") != "OK":
        raise RuntimeError(f"POST {path} answered {body}")


SYNC_WORKERS = ("--worker-class", "sync", "--threads", "1")  # gunicorn's own default, for comparison
METHOD_VARIANTS = {  # name -> (transport, extra gunicorn options); "kafka, shipped" is ext_method
    "kafka, sync workers": ("kafka", SYNC_WORKERS),
    "sqlite, shipped": ("sqlite", ()),
    "sqlite, sync workers": ("sqlite", SYNC_WORKERS),
}


def run_web(broker: Broker, *, slices: int, slice_seconds: int, method_slices: int, method_seconds: int,
            warmup: int, connections: int, wrk: str | None) -> HttpResult:
    """User route in alternating slices (ext, plain, reference; reversed every other round), then the method route,
    each of its slices followed by one of the hand-written app of the same design (the floor).

    Each method-route slice gets a fresh broker, topic and server: every call
    writes a ``_CMD`` and a ``_RESULT`` into the app's partition and Tansu's
    fetch cost grows with the batches in a partition (the rate halves within
    ~10 s). Then one slice per ``METHOD_VARIANTS`` entry: the same calls on
    sqlite, and with gunicorn's sync workers instead of the shipped config.
    Worker RSS is the largest seen on any extension server, after its load.
    """
    from harness.apps import TRIVIAL_METHOD, USER_ROUTE
    from harness.raw_call import RAW_CALL_ROUTE

    runner = LoadRunner(wrk, connections)
    result = HttpResult(tool=runner.tool, lopsided_retries=LOPSIDED_RETRIES)
    method_path = f"/ofa/methods/{TRIVIAL_METHOD}"

    def ext_server(transport: str = "kafka", options: tuple[str, ...] = (),
                   app: str = "harness.apps:ext_app()") -> Gunicorn:
        broker.restart()
        topic = broker.create_topic(unique_name("bench-http"), 8)
        env = ext_env(broker.bootstrap, topic, "BENCH-HTTP", scratch_dir("locks-"))
        if transport == "sqlite":
            env["FLASK_OPENFACTORY_TRANSPORT_URL"] = f"sqlite:///{scratch_dir('sqlite-')}/openfactory.sqlite3"
        return Gunicorn(app, env, options=options)

    def method_slice(server: Gunicorn, path: str = method_path, ready: str = "/ofa/ready") -> tuple[Load, float]:
        server.start(ready)
        _check_method_route(server.port, path)
        runner.run(server.port, "POST", path, "{}", warmup)
        cpu = server.cpu_seconds()
        load = runner.measure(server.port, "POST", path, "{}", method_seconds, 0)
        return load, (server.cpu_seconds() - cpu) / load.ok * 1e6

    ext = ext_server()
    plain = Gunicorn("harness.apps:plain_app()", ext.env)
    ref = ReferenceServer(ext.env)
    # Its own topic and lock: its log is not the extension's.
    floor_env = {**ext.env, "FLASK_OPENFACTORY_ASSETS_TOPIC": broker.create_topic(unique_name("bench-floor"), 8),
                 "FLASK_OPENFACTORY_LOCK_DIR": scratch_dir("locks-")}
    floor = Gunicorn("harness.raw_call:raw_call_app(follow_at_boot=True)", floor_env)
    servers: dict[str, Server] = {"ext": ext, "plain": plain, "ref": ref, "floor": floor}
    loads = {"ext": result.ext_user, "plain": result.plain_user, "ref": result.ref_user, "floor": result.floor_user}
    cpus = {"ext": result.ext_cpu_us, "plain": result.plain_cpu_us, "ref": result.ref_cpu_us,
            "floor": result.floor_user_cpu_us}
    try:
        ext.start("/ofa/ready")
        ext.pause()
        plain.start(USER_ROUTE)
        plain.pause()
        ref.start(USER_ROUTE)
        ref.pause()
        floor.start(USER_ROUTE)
        floor.pause()
        for server in servers.values():
            server.resume()
            runner.run(server.port, "GET", USER_ROUTE, None, warmup)
            server.pause()
        for i in range(slices):
            for name in ("ext", "plain", "ref", "floor") if i % 2 == 0 else ("floor", "ref", "plain", "ext"):
                server = servers[name]
                server.resume()
                for attempt in range(LOPSIDED_RETRIES + 1):
                    before = server.cpu_by_process()
                    load = runner.measure(server.port, "GET", USER_ROUTE, None, slice_seconds, 0)
                    after = server.cpu_by_process()
                    if attempt == LOPSIDED_RETRIES or not _lopsided(server, before, after):
                        break
                    result.lopsided[name] = result.lopsided.get(name, 0) + 1
                    log(f"http slice {i + 1}/{slices}, {name}: one worker served it ({load.rps:,.0f} req/s); again")
                cpu = sum(after.values()) - sum(before.values())
                server.pause()
                loads[name].append(load)
                cpus[name].append(cpu / load.ok * 1e6)
            log(f"http slice {i + 1}/{slices}: user route extension {result.ext_user[-1].rps:,.0f} req/s, "
                f"plain Flask {result.plain_user[-1].rps:,.0f} req/s, reference server "
                f"{result.ref_user[-1].rps:,.0f} req/s, floor {result.floor_user[-1].rps:,.0f} req/s")
        for server in servers.values():
            server.resume()
        result.plain_rss = plain.worker_rss_mb()
        result.ext_rss = ext.worker_rss_mb()
    finally:
        floor.close()
        ref.close()
        plain.close()
        ext.close()
    for i in range(method_slices):
        ext = ext_server()
        try:
            load, cpu_us = method_slice(ext)
            result.method_cpu_us.append(cpu_us)
            result.ext_method.append(load)
            result.ext_rss = max(result.ext_rss, ext.worker_rss_mb())
        finally:
            ext.close()
        log(f"http method route {i + 1}/{method_slices}: {load.rps:,.0f} req/s, {cpu_us:.0f} µs per call")
        floor = ext_server(app="harness.raw_call:raw_call_app()")  # a fresh broker too
        try:
            load, cpu_us = method_slice(floor, RAW_CALL_ROUTE, USER_ROUTE)
            result.floor_cpu_us.append(cpu_us)
            result.floor_method.append(load)
        finally:
            floor.close()
        log(f"http call floor (hand-written) {i + 1}/{method_slices}: {load.rps:,.0f} req/s, {cpu_us:.0f} µs per call")
    for name, (transport, options) in METHOD_VARIANTS.items():
        ext = ext_server(transport, options)
        try:
            load, cpu_us = method_slice(ext)
        finally:
            ext.close()
        result.method_variants[name] = (load.rps, cpu_us)
        log(f"http method route, {name}: {load.rps:,.0f} req/s, {cpu_us:.0f} µs per call")
    log(f"http: worker RSS extension {result.ext_rss:.1f} MB, plain {result.plain_rss:.1f} MB")
    return result
