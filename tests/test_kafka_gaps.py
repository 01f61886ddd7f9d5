"""Offsets a fetch jumps over are read again until they come, or accepted as a real gap.

The test broker serves a batch before an earlier one is readable when several
producers write at once (measured: the skipped offsets came 10 to 25 ms later);
it cannot be made to do so on demand, so the guard is driven by the offsets such
a broker returns. The gunicorn test under load is the end-to-end check.
"""

from __future__ import annotations

import logging
from collections import Counter

import pytest
from confluent_kafka import TopicPartition

from flask_openfactory.transports.kafka.messages import GapGuard


class SeekLog:
    """Stands in for the consumer: the guard only seeks it."""

    def __init__(self) -> None:
        self.seeks: list[int] = []

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append(tp.offset)


def test_in_order_and_replayed_offsets_need_nothing() -> None:
    guard = GapGuard()
    assert guard.step(410, 410) is None
    assert guard.step(410, 409) is None  # replayed: the readers' own business
    assert guard.step(-1, 7) is None  # no position yet (a follower opened at the end)


def test_a_gap_served_late_is_read_again_until_it_comes() -> None:
    guard = GapGuard()
    assert guard.step(410, 412) == "read again"  # 410 and 411 skipped
    assert guard.step(410, 412) == "read again"  # still not readable
    assert guard.step(410, 410) == "filled"
    assert guard.step(411, 411) is None  # in order again
    assert guard.step(500, 505) == "read again"  # a new gap starts its own count


def test_a_gap_that_stays_is_accepted_after_a_bounded_number_of_reads() -> None:
    guard = GapGuard()
    steps = [guard.step(410, 412) for _ in range(GapGuard.TRIES + 1)]
    assert steps == ["read again"] * GapGuard.TRIES + ["accepted"]
    assert guard.step(413, 413) is None
    assert guard.step(600, 602) == "read again"  # the next gap is read again too


def test_a_partly_filled_gap_reads_the_rest_again() -> None:
    guard = GapGuard()
    assert guard.step(410, 415) == "read again"
    assert guard.step(410, 410) == "filled"
    assert guard.step(411, 415) == "read again"  # 411 to 414 still missing
    assert guard.step(411, 411) == "filled"


def test_read_again_seeks_back_counts_and_says_what_happened(caplog: pytest.LogCaptureFixture) -> None:
    guard, consumer, stats = GapGuard(), SeekLog(), Counter[str]()
    tp = TopicPartition("assets", 3)
    caplog.set_level(logging.DEBUG, "flask_openfactory.kafka")

    def read(position: int, offset: int) -> bool:
        return guard.read_again(consumer, tp, position, offset, what="the log of A", stats=stats)  # type: ignore[arg-type]

    assert not read(410, 410)
    assert read(410, 412) and consumer.seeks == [410]  # the caller drops the rest of its batch
    assert not read(410, 410)
    assert stats == {"gaps_read_again": 1}

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    assert warnings() == ["the log of A (topic 'assets' partition 3): offsets 410 to 411 were returned only when "
                          "read again (the broker served later records first); nothing was skipped"]

    assert read(500, 501) and not read(500, 500)  # one offset late
    assert warnings()[-1].startswith("the log of A (topic 'assets' partition 3): offset 500 was returned only")

    for _ in range(GapGuard.TRIES):
        assert read(700, 702)
    assert not read(700, 702)  # accepted: the caller goes on from 702
    assert consumer.seeks == [410, 500] + [700] * GapGuard.TRIES
    assert stats == {"gaps_read_again": 2, "gaps_accepted": 1}
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == ["the log of A (topic 'assets' partition 3): offsets 700 to 701 are missing after 4 reads: "
                     "a gap in the log, continuing at 702"]
