"""A runtime's counters: written by family and label, read by flat name."""

from __future__ import annotations

from flask_openfactory.runtime.counters import COMMANDS_ANSWERED, COMMANDS_REJECTED, FAMILIES, TASK_RUNS, Counters


def test_labelled_counts_are_kept_by_family_and_read_by_flat_name() -> None:
    counters = Counters()
    counters.add("commands_received", 2)
    counters.add_labelled(COMMANDS_ANSWERED, "ok")
    counters.add_labelled(COMMANDS_REJECTED, "expired")
    counters.add_labelled(COMMANDS_REJECTED, "expired")
    counters.add_labelled(TASK_RUNS, "ticker")

    assert counters.labelled(COMMANDS_ANSWERED) == {"error": 0, "ok": 1, "rejected": 0}  # fixed values while zero
    assert counters.labelled(COMMANDS_REJECTED) == {"expired": 2}
    assert dict(counters) == {"commands_received": 2, "commands_ok": 1, "rejected_expired": 2, "task_ticker_runs": 1}
    assert counters["rejected_expired"] == 2 and counters["never_counted"] == 0
    assert "rejected_expired" in counters and "never_counted" not in counters


def test_a_label_value_that_looks_like_another_counter_stays_in_its_family() -> None:
    counters = Counters()
    counters.add_labelled(COMMANDS_ANSWERED, "received")  # flat name collides with a plain counter's
    assert counters.labelled(COMMANDS_ANSWERED)["received"] == 1
    assert counters.plain["commands_received"] == 0


def test_every_family_is_exported_by_the_metrics() -> None:
    from flask_openfactory.metrics import EVENT_FAMILIES, LABELLED_FAMILIES

    assert sorted(f.metric for f in (*LABELLED_FAMILIES, *EVENT_FAMILIES)) == sorted(f.metric for f in FAMILIES)
