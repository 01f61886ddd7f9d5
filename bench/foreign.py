"""Does the app's command consumer fetch other assets' partitions?

Two in-process apps (one per election mode: host lock and consumer group)
run while ten other assets, each on a partition that is not theirs, publish
at full speed from two separate processes. The command reader counts records
fetched per partition (``received``); every record from a partition other
than the app's own is one the app should never have downloaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from flask_openfactory.transports.partitioning import partition_for_key
from harness.progress import log
from harness.scratch import scratch_dir, unique_name

from .apps import asset_app
from .common import ROOT, Broker
from .rtt import send_commands

PARTITIONS = 12
OTHER_ASSETS = 10
COMMANDS = 5


@dataclass
class ForeignResult:
    foreign: dict[str, int] = field(default_factory=dict)  # per election mode
    own: dict[str, int] = field(default_factory=dict)
    answered: dict[str, int] = field(default_factory=dict)
    flood_records: int = 0
    seconds: float = 0.0


def _uuid_on_free_partition(prefix: str, taken: set[int]) -> str:
    """A UUID whose partition is not in ``taken`` (then taken)."""
    for i in range(10_000):
        candidate = f"{prefix}-{i}"
        partition = partition_for_key(candidate.encode("utf-8"), PARTITIONS)
        if partition not in taken:
            taken.add(partition)
            return candidate
    raise RuntimeError("no free partition")


def _wait_owner(runtime: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if runtime.owns_command_log:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{runtime.asset_uuid}: never became the command executor")


def run_foreign(broker: Broker, *, seconds: float) -> ForeignResult:
    topic = broker.create_topic(unique_name("bench-foreign"), PARTITIONS)
    lock_dir = scratch_dir("locks-")
    taken: set[int] = set()
    apps = {}
    for mode in ("lock", "group"):
        asset = _uuid_on_free_partition(f"BENCH-APP-{mode.upper()}", taken)
        apps[mode] = asset_app(bootstrap=broker.bootstrap, topic=topic, asset_uuid=asset, lock_dir=lock_dir,
                               election=mode)[0]
    app_partitions = frozenset(taken)
    candidates = (f"OTHER-ASSET-{i}" for i in range(10_000))
    others = [c for c in candidates if partition_for_key(c.encode("utf-8"), PARTITIONS) not in app_partitions]
    others = others[:OTHER_ASSETS]
    runtimes = {mode: app.extensions["openfactory"].runtime for mode, app in apps.items()}
    result = ForeignResult(seconds=seconds)
    try:
        for runtime in runtimes.values():
            runtime.start()
        for runtime in runtimes.values():
            _wait_owner(runtime)
        half = OTHER_ASSETS // 2
        floods = [
            subprocess.Popen([sys.executable, "-m", "bench.flood", broker.bootstrap, topic, str(seconds), *part],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True)
            for part in (others[:half], others[half:])
        ]
        time.sleep(min(1.0, seconds / 3))
        for runtime in runtimes.values():  # the consumer must keep serving while others flood
            send_commands(broker.bootstrap, topic, runtime.asset_uuid, "method_0", COMMANDS)
        for proc in floods:
            out, _ = proc.communicate(timeout=seconds + 60)
            if proc.returncode != 0:
                raise RuntimeError(f"flood process failed ({proc.returncode})")
            result.flood_records += int(json.loads(out)["delivered"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(r.counters["commands_ok"] < COMMANDS for r in runtimes.values()):
            time.sleep(0.05)
        time.sleep(0.5)  # let the readers fetch anything still on its way
        for mode, runtime in runtimes.items():
            state = runtime.dispatcher_state()
            if state is None or state.reader is None:
                raise RuntimeError(f"{runtime.asset_uuid}: no command reader open")
            own = state.reader_stats["partition"]
            received = dict(state.reader_stats["received"])
            result.foreign[mode] = sum(n for p, n in received.items() if p != own)
            result.own[mode] = received.get(own, 0)
            result.answered[mode] = runtime.counters["commands_ok"]
            log(f"foreign ({mode} election): received per partition {received}, own partition {own}")
    finally:
        for runtime in runtimes.values():
            runtime.stop(10)
    return result
