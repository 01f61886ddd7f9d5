"""``GET <prefix>/metrics``: the runtime's state in Prometheus text format.

prometheus-client is an optional extra (``pip install flask-openfactory[metrics]``):
this module imports it only when an app builds its metrics, so that the
runtime can record method results (``MethodResults``) without it.

Each app gets its own ``CollectorRegistry`` (two apps in one process must not
mix their numbers) holding one collector that reads the runtime at scrape
time: nothing is counted twice and nothing runs between scrapes.

Two scopes, named in each family's help text:

* per process: what this process did (records it published, commands it
  executed as the executor, HTTP calls it served, its transport);
* per asset: method results read back from the asset's log, by method and
  status, with their durations. Every process of the asset follows the log,
  so any gunicorn worker a scrape lands on reports the same numbers (counted
  from the moment that process started following).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .runtime.counters import (
    COMMANDS_ANSWERED,
    COMMANDS_REJECTED,
    HTTP_CALLS,
    RECORDS_SKIPPED,
    TASK_FAILURES,
    TASK_RUNS,
)

# Counted by the runtime (which never imports this module); re-exported for the collector's users.
from .runtime.method_results import DURATION_BUCKETS, OTHER_METHOD, STATUSES, MethodResults, ResultsSnapshot

if TYPE_CHECKING:
    from .runtime import AssetRuntime

__all__ = ["DURATION_BUCKETS", "INSTALL_HINT", "NAMESPACE", "OTHER_METHOD", "STATUSES", "AppMetrics",
           "MethodResults", "ResultsSnapshot", "RuntimeCollector", "app_metrics"]

NAMESPACE = "openfactory"
INSTALL_HINT = "install the 'metrics' extra for GET /metrics: pip install 'flask-openfactory[metrics]'"


# -- the collector ----------------------------------------------------------------------

LABELLED_FAMILIES = (COMMANDS_ANSWERED, COMMANDS_REJECTED, RECORDS_SKIPPED, HTTP_CALLS)  # a metric family each
EVENT_FAMILIES = (TASK_RUNS, TASK_FAILURES)  # in openfactory_runtime_events_total, one event per task

# Runtime counters with a family of their own; every other counter goes to
# openfactory_runtime_events_total{event} so that a new one is never lost.
_SIMPLE_COUNTERS: dict[str, tuple[str, str]] = {
    "records_published": ("records_published", "Records this process queued for the asset's log"),
    "delivery_failures": ("delivery_failures", "Records of this process the log did not accept in the end"),
    "result_delivery_failures": ("result_delivery_failures",
                                 "Attempts of this process to write a command result that the log refused"),
    "results_unrecorded": ("results_unrecorded",
                           "Results of methods that ran here that the log refused (held and written again)"),
    "commands_received": ("commands_received", "Commands this process read as the asset's executor"),
    "commands_duplicate": ("commands_duplicate", "Duplicate commands this process suppressed (already answered)"),
    "commands_timed_out": ("commands_timed_out", "Commands this process reported as timed out"),
    "commands_unanswerable": ("commands_unanswerable",
                              "Commands this process dropped for lack of a usable correlation id"),
    "busy_refusals": ("busy_refusals",
                      "HTTP requests this process answered 503 because the outgoing queue stayed full"),
}
class RuntimeCollector:
    """Reads one runtime at scrape time (a prometheus-client custom collector)."""

    def __init__(self, runtime: AssetRuntime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        runtime = self.runtime

        def name(suffix: str) -> str:
            return f"{NAMESPACE}_{suffix}"

        info = InfoMetricFamily(name("asset"), "The asset this app is")
        info.add_metric([], {
            "asset_uuid": runtime.asset_uuid,
            "application_version": runtime.settings.application_version,
            "transport": runtime.settings.transport_url.split("://", 1)[0],  # the scheme: URLs may hold secrets
        })
        yield info

        counters = runtime.counters
        plain = dict(counters.plain)
        for key, (family, text) in _SIMPLE_COUNTERS.items():
            simple = CounterMetricFamily(name(family), text)
            simple.add_metric([], plain.pop(key, 0))
            yield simple
        for labelled in LABELLED_FAMILIES:
            metric = CounterMetricFamily(name(labelled.metric), labelled.help, labels=[labelled.label])
            for value, count in sorted(counters.labelled(labelled).items()):
                metric.add_metric([value], count)
            yield metric
        events = CounterMetricFamily(name("runtime_events"), "Other runtime counters of this process, by event",
                                     labels=["event"])
        for key, count in sorted(plain.items()):
            events.add_metric([key], count)
        for per_task in EVENT_FAMILIES:  # counted per task, shown as events by their flat names
            for value, count in sorted(counters.labelled(per_task).items()):
                events.add_metric([per_task.flat_name(value)], count)
        yield events

        yield from self._results(runtime)
        yield from self._readiness(runtime, GaugeMetricFamily)
        yield from self._consumer(runtime, GaugeMetricFamily)
        yield from self._transport(runtime, GaugeMetricFamily)

    def _results(self, runtime: AssetRuntime) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        data = runtime.method_results.snapshot()
        for method in runtime.methods:  # declared methods from zero, so that rate() sees the first one
            for status in STATUSES:
                data.counts.setdefault((method, status), 0)
        results = CounterMetricFamily(
            f"{NAMESPACE}_method_results",
            "Method results on the asset's log (commands and HTTP calls, any process), by method and status",
            labels=["method", "status"])
        for (method, status), count in sorted(data.counts.items()):
            results.add_metric([method, status], count)
        yield results
        durations = HistogramMetricFamily(
            f"{NAMESPACE}_method_duration_seconds",
            "Run time of methods (results OK and ERROR on the asset's log), by method", labels=["method"])
        bounds = runtime.method_results.buckets
        for method, histogram in sorted(data.durations.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, histogram.buckets, strict=False):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            buckets.append(("+Inf", histogram.count))
            durations.add_metric([method], buckets, histogram.total)
        yield durations

    def _readiness(self, runtime: AssetRuntime, gauge: Callable[..., Any]) -> Iterator[Any]:
        checks = runtime.health_checks()
        ready = gauge(f"{NAMESPACE}_ready", "1 when this process is ready to serve the asset (GET /ready)")
        ready.add_metric([], float(all(c.ok for c in checks.values())))
        ok = gauge(f"{NAMESPACE}_check_ok", "Readiness checks of this process: 1 ok, 0 failing", labels=["check"])
        since = gauge(f"{NAMESPACE}_check_since_timestamp_seconds",
                      "When each readiness check last changed state (Unix time)", labels=["check"])
        for check, health in checks.items():
            ok.add_metric([check], float(health.ok))
            since.add_metric([check], health.since)
        yield ready
        yield ok
        yield since
        transport = checks.get("transport")
        if transport is not None:
            up = gauge(f"{NAMESPACE}_transport_up", "1 when this process's transport (the broker) answers")
            up.add_metric([], float(transport.ok))
            yield up
            changed = gauge(f"{NAMESPACE}_transport_since_timestamp_seconds",
                            "When the transport last went up or down (Unix time)")
            changed.add_metric([], transport.since)
            yield changed

    def _consumer(self, runtime: AssetRuntime, gauge: Callable[..., Any]) -> Iterator[Any]:
        state = runtime.dispatcher_state()
        if state is None:
            return  # this process executes no commands
        from prometheus_client.core import CounterMetricFamily

        for value, suffix, text in (
            (state.alive, "command_dispatcher_up", "1 while this process's command dispatcher runs"),
            (state.alive and state.owns, "command_executor",
             "1 when this process executes the asset's commands, 0 standing by"),
            (state.position, "command_position", "Next position of the asset's command log this process reads"),
        ):
            if value is None:
                continue
            family = gauge(f"{NAMESPACE}_{suffix}", text)
            family.add_metric([], float(value))
            yield family
        recoveries = CounterMetricFamily(f"{NAMESPACE}_command_recoveries",
                                         "Times this process took over the command log (recovery passes)")
        recoveries.add_metric([], float(state.recoveries))
        yield recoveries

    def _transport(self, runtime: AssetRuntime, gauge: Callable[..., Any]) -> Iterator[Any]:
        stats = runtime.transport_stats()
        if "fault" in stats:  # the transport knows its faults by kind (sqlite: deleted, corrupt...)
            fault = gauge(f"{NAMESPACE}_transport_fault",
                          "1 while the transport's log is at fault in this process, by kind (see GET /ready)",
                          labels=["kind"])
            if stats["fault"]:
                fault.add_metric([str(stats["fault"])], 1.0)
            yield fault
        numbers = {k: v for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not numbers:
            return
        family = gauge(f"{NAMESPACE}_transport_stat",
                       "The transport's own statistics in this process (published, delivered, pending...)",
                       labels=["stat"])
        for key, value in sorted(numbers.items()):
            family.add_metric([key], float(value))
        yield family


def _le(bound: float) -> str:
    return repr(float(bound))


@dataclass
class AppMetrics:
    """One app's registry: its runtime collector and this process's resource use."""

    registry: Any

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition the client asked for (OpenMetrics or Prometheus text) and its content type."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def app_metrics(runtime: AssetRuntime) -> AppMetrics | None:
    """A registry for one app, or None without prometheus-client."""
    try:
        from prometheus_client import CollectorRegistry, ProcessCollector
    except ImportError:
        return None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(runtime))
    ProcessCollector(registry=registry)  # memory, CPU, file descriptors: the soak's questions
    return AppMetrics(registry)
