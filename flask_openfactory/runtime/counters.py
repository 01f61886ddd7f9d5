"""What one runtime counts: plain events, and families with one label.

Writers name the event, and for a family its label value, so that
``/metrics`` exports them as written (``openfactory_commands_rejected_total
{reason="expired"}``) instead of parsing names back apart. People read the
same numbers by flat name (``rejected_expired``) in the stats endpoint, the
CLI and tests: that view is built on read, never on the write path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Family:
    """A counter with one label; ``flat`` names one of its values for people (``{}``: the value)."""

    metric: str
    label: str
    help: str
    flat: str
    values: tuple[str, ...] = ()  # exported even while zero

    def flat_name(self, value: str) -> str:
        return self.flat.format(value)


COMMANDS_ANSWERED = Family("commands_answered", "status", "Commands this process answered as the executor, by status",
                           "commands_{}", ("error", "ok", "rejected"))
COMMANDS_REJECTED = Family("commands_rejected", "reason", "Commands this process rejected, by reason", "rejected_{}")
RECORDS_SKIPPED = Family("records_skipped", "reason", "Records of the command log this process skipped, by reason",
                         "records_{}", ("foreign", "malformed"))
HTTP_CALLS = Family("http_calls", "status", "Method calls this process served over HTTP, by status", "http_{}",
                    ("error", "ok"))
TASK_RUNS = Family("task_runs", "task", "Runs of each background task in this process", "task_{}_runs")
TASK_FAILURES = Family("task_failures", "task", "Failed runs of each background task in this process",
                       "task_{}_failures")

# Every family; /metrics must export each (tests/test_counters.py checks it).
FAMILIES = (COMMANDS_ANSWERED, COMMANDS_REJECTED, RECORDS_SKIPPED, HTTP_CALLS, TASK_RUNS, TASK_FAILURES)


class Counters(Mapping[str, int]):
    """One runtime's counts; read as a mapping of flat names (a missing one is 0)."""

    def __init__(self) -> None:
        self.plain: Counter[str] = Counter()  # the hot path may increment it directly
        self._labelled: Counter[tuple[Family, str]] = Counter()

    def add(self, event: str, amount: int = 1) -> None:
        self.plain[event] += amount

    def add_labelled(self, family: Family, value: str, amount: int = 1) -> None:
        self._labelled[(family, value)] += amount

    def labelled(self, family: Family) -> dict[str, int]:
        """The family's counts by label value, its always-exported values included."""
        counts = dict.fromkeys(family.values, 0)
        for (owner, value), count in list(self._labelled.items()):
            if owner is family:
                counts[value] = count
        return counts

    def _flat(self) -> dict[str, int]:
        flat = dict(self.plain)
        for (family, value), count in list(self._labelled.items()):
            flat[family.flat_name(value)] = count
        return flat

    def __getitem__(self, name: str) -> int:
        return self._flat().get(name, 0)

    def __contains__(self, name: object) -> bool:
        return name in self._flat()

    def __iter__(self) -> Iterator[str]:
        return iter(self._flat())

    def __len__(self) -> int:
        return len(self._flat())
