"""The loop shared by the dispatcher and owner-mode subscriptions, step by step.

A scripted reader plays the log (ownership, generations, catching up, failures);
the owner records the calls it gets. The real readers and both users of the
loop are covered end to end by the dispatcher, subscription and fault tests.
"""

from __future__ import annotations

import threading
from typing import Any

from flask_openfactory.runtime.backoff import Backoff
from flask_openfactory.runtime.owned_reading import read_as_owner, retry_until_stopped
from flask_openfactory.transports.base import CommandReader, LogEntry


class ScriptedReader(CommandReader):
    """Each poll plays the next step: (generation, offsets read, caught up after it) or an exception."""

    def __init__(self, steps: list[Any], stop: threading.Event) -> None:
        self.steps = list(steps)
        self.stop = stop
        self._generation = 0
        self._caught_up = True
        self.commits: list[int] = []
        self.closed = False

    @property
    def owns(self) -> bool:
        return self._generation > 0

    @property
    def generation(self) -> int:
        return self._generation

    def poll(self, timeout: float) -> list[LogEntry]:
        if not self.steps:
            self.stop.set()
            return []
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        self._generation, offsets, self._caught_up = step
        return [LogEntry(o, "A", None) for o in offsets]

    def caught_up(self) -> bool:
        return self._caught_up

    def commit(self, offset: int) -> None:
        self.commits.append(offset)

    def close(self) -> None:
        self.closed = True


class Owner:
    """Records every step the loop asks for."""

    def __init__(self, readers: list[ScriptedReader], *, stop_in_handle: threading.Event | None = None) -> None:
        self.readers = readers
        self.calls: list[tuple[str, Any]] = []
        self.held: list[int] = []
        self.done: list[int] = []
        self.pending: list[int] = []
        self.stop_in_handle = stop_in_handle

    def open_reader(self) -> CommandReader | None:
        reader = self.readers.pop(0)
        self.calls.append(("open", None))
        return reader

    def poll_timeout(self) -> float:
        return 0.0

    def keep_reading(self, reader: CommandReader) -> bool:
        return True

    def polled(self, reader: CommandReader, entries: list[LogEntry]) -> None:
        self.pending.extend(e.offset for e in entries)

    def took_over(self) -> None:
        self.calls.append(("took_over", None))
        self.held = []

    def hold(self, entries: list[LogEntry]) -> None:
        self.held.extend(e.offset for e in entries)

    def release(self) -> bool:
        self.calls.append(("release", list(self.held)))
        self.done.extend(self.held)
        self.held = []
        return True

    def handle(self, entries: list[LogEntry]) -> bool:
        if self.stop_in_handle is not None and entries:
            self.stop_in_handle.set()
            return False
        if entries:
            self.calls.append(("handle", [e.offset for e in entries]))
        self.done.extend(e.offset for e in entries)
        return True

    def commit(self, reader: CommandReader) -> None:
        assert isinstance(reader, ScriptedReader)
        if self.done and max(self.done) not in reader.commits:
            reader.commit(max(self.done))

    def finished(self, reader: CommandReader) -> None:
        self.calls.append(("finished", None))
        reader.close()

    def failed(self, error: Exception) -> None:
        self.calls.append(("failed", str(error)))


def test_what_is_read_while_catching_up_is_released_in_one_go_then_live() -> None:
    stop = threading.Event()
    reader = ScriptedReader([(1, [0, 1], False), (1, [2], False), (1, [3], True), (1, [4], True)], stop)
    owner = Owner([reader])
    read_as_owner(owner, stop=stop, backoff=Backoff(0.0, 0.0), idle_wait=0.0)
    assert owner.calls == [("open", None), ("took_over", None), ("release", [0, 1, 2, 3]),
                           ("handle", [4]), ("finished", None)]
    assert reader.commits == [3, 4]  # nothing is committed before the release
    assert reader.closed


def test_a_second_takeover_while_catching_up_forgets_what_the_first_held() -> None:
    stop = threading.Event()
    reader = ScriptedReader([(1, [5, 6], False), (2, [5], False), (2, [6], True)], stop)
    owner = Owner([reader])
    read_as_owner(owner, stop=stop, backoff=Backoff(0.0, 0.0), idle_wait=0.0)
    assert owner.calls[:4] == [("open", None), ("took_over", None), ("took_over", None), ("release", [5, 6])]
    assert owner.done == [5, 6]  # read twice, released once


def test_a_handling_cut_short_by_the_stop_commits_nothing() -> None:
    stop = threading.Event()
    reader = ScriptedReader([(1, [], True), (1, [7], True)], stop)
    owner = Owner([reader], stop_in_handle=stop)
    read_as_owner(owner, stop=stop, backoff=Backoff(0.0, 0.0), idle_wait=0.0)
    assert reader.commits == []
    assert owner.calls[-1] == ("finished", None)


def test_a_failing_reader_is_reported_and_a_new_one_opened() -> None:
    stop = threading.Event()
    broken = ScriptedReader([(1, [0], True), RuntimeError("broker away")], stop)
    second = ScriptedReader([(1, [1], True)], stop)
    owner = Owner([broken, second])
    read_as_owner(owner, stop=stop, backoff=Backoff(0.0, 0.0), idle_wait=0.0)
    assert ("failed", "broker away") in owner.calls
    assert [c for c in owner.calls if c[0] == "open"] == [("open", None), ("open", None)]
    assert second.commits == [1]


def test_retry_until_stopped_counts_consecutive_failures_and_starts_again_after_a_success() -> None:
    stop = threading.Event()
    outcomes: list[Exception | None] = [RuntimeError("a"), RuntimeError("b"), None, RuntimeError("c")]
    backoff = Backoff(0.0001, 1.0)
    seen: list[tuple[str, int]] = []

    def attempt() -> None:
        if not outcomes:
            stop.set()
            return
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    def failed(error: Exception) -> None:
        seen.append((str(error), backoff.failures))  # failures before this one, in a row

    retry_until_stopped(attempt, stop=stop, backoff=backoff, failed=failed)
    assert seen == [("a", 0), ("b", 1), ("c", 0)]
