"""Issue 11 in one process (memory and sqlite): calls through the log, the log's memory of
answers, reads that follow writes, hand-over by a stopping process, one start per deployment."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from flask_openfactory import SampleAttribute, ofa_method
from flask_openfactory.runtime import AssetRuntime, CallPending, RuntimeSettings
from flask_openfactory.runtime.calls import CallBook, CallConflict
from flask_openfactory.runtime.freshness import SharedLookup
from flask_openfactory.wire.commands import OK, CommandResult, command_record, new_envelope
from flask_openfactory.wire.methods import spec_of
from harness.waiting import wait_for

ran: list[tuple[str, float]] = []


@ofa_method()
def move(x: float) -> dict[str, float]:
    ran.append(("move", x))
    return {"x": x}


@ofa_method(run_anywhere=True)
def where() -> str:
    return "here"


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    ran.clear()
    return f"memory://calls-{uuid.uuid4()}" if request.param == "memory" else f"sqlite:///{tmp_path}/calls.db"


@pytest.fixture
def runtimes() -> Iterator[list[AssetRuntime]]:
    made: list[AssetRuntime] = []
    yield made
    for runtime in made:
        runtime.stop(2.0)


def make(url: str, made: list[AssetRuntime], **overrides: Any) -> AssetRuntime:
    runtime = AssetRuntime(RuntimeSettings(asset_uuid="CALLS", transport_url=url, **overrides))
    runtime.declare_attribute(SampleAttribute("position", tag="Position", default=0.0))
    runtime.declare_method(spec_of(move))
    runtime.declare_method(spec_of(where))
    made.append(runtime)
    return runtime


def executing(runtime: AssetRuntime) -> bool:
    return runtime.health_checks()["commands"].detail.startswith("executing")


def owner(*candidates: AssetRuntime) -> AssetRuntime:
    return wait_for(lambda: next((r for r in candidates if executing(r)), None), 10, "one runtime executing commands")


# -- the book ------------------------------------------------------------------------------


def result(cid: str, method: str = "move") -> CommandResult:
    return CommandResult(method, cid, "S", OK, result=1, duration_ms=1.0)


def test_the_book_knows_answers_refuses_reused_ids_and_forgets_by_time() -> None:
    book = CallBook(window=0.2, cap=100)
    envelope = new_envelope("S", {"x": 1.0})
    book.observe([command_record("A", "move", envelope)])
    cid = envelope.correlation_id
    assert cid not in book  # seen, not answered
    assert book.check_same_call(cid, "move", {"x": "1.0"}) is not None
    with pytest.raises(CallConflict, match="other arguments"):
        book.check_same_call(cid, "move", {"x": "2.0"})
    with pytest.raises(CallConflict, match="'move', not 'home'"):
        book.check_same_call(cid, "home", {})
    book.add(cid)  # the executor's mark, before its result is read back
    assert cid in book
    book.answered(result(cid))
    assert book.wait(cid, 0) == result(cid)
    time.sleep(0.25)  # let the window pass (the book forgets by time)
    book.add(str(uuid.uuid4()))
    assert book.get(cid) is None and len(book) == 1


def test_the_book_is_capped_and_counts_what_it_forgot_early() -> None:
    book = CallBook(window=300, cap=3)
    for _ in range(5):
        book.add(str(uuid.uuid4()))
    assert len(book) == 3 and book.evicted_early == 2


def test_a_waiter_gets_the_result_answered_later() -> None:
    book = CallBook(window=300, cap=10)
    cid = str(uuid.uuid4())
    threading.Timer(0.05, lambda: book.answered(result(cid))).start()
    assert book.wait(cid, 5) == result(cid)
    assert book.wait(str(uuid.uuid4()), 0.01) is None


def test_a_result_wakes_every_request_waiting_for_it_and_a_refused_one_ends_the_wait() -> None:
    book = CallBook(window=300, cap=10)
    cid, other = str(uuid.uuid4()), str(uuid.uuid4())
    got: dict[str, list[CommandResult | None]] = {cid: [], other: []}

    def waiter(which: str) -> None:
        got[which].append(book.wait(which, 30))

    threads = [threading.Thread(target=waiter, args=(cid,)) for _ in range(3)]
    held = threading.Thread(target=waiter, args=(other,))
    for thread in [*threads, held]:
        thread.start()
    threading.Timer(0.05, lambda: book.answered(result(cid))).start()
    for thread in threads:
        thread.join(10)
    assert got[cid] == [result(cid)] * 3
    assert held.is_alive() and got[other] == []  # another id's result is not this one's
    book.unrecorded(result(other), "the log refused it")  # ran here, result held: the wait ends now
    held.join(10)
    assert not held.is_alive() and got[other] == [None]


# -- one shared lookup of the log's end ----------------------------------------------------


def test_readers_share_a_lookup_that_started_after_they_arrived() -> None:
    gate, count = threading.Event(), []

    def lookup() -> int:
        count.append(1)
        if len(count) == 1:
            gate.wait(5)  # the first lookup is slow: later readers must not take its answer
        return len(count)

    shared = SharedLookup(lookup)
    answers: dict[str, int] = {}
    first = threading.Thread(target=lambda: answers.update(first=shared(5)))
    first.start()
    wait_for(lambda: count, 5, "the first lookup to start")
    later = [threading.Thread(target=lambda n=n: answers.update({f"later{n}": shared(5)})) for n in range(5)]
    for thread in later:
        thread.start()
    wait_for(lambda: shared.queued, 5, "the later readers to queue")
    gate.set()
    for thread in [first, *later]:
        thread.join(5)
    assert answers["first"] == 1
    assert {answers[f"later{n}"] for n in range(5)} == {2}  # one lookup for the five, after they came
    assert shared.lookups == 2


# -- calls through the log -----------------------------------------------------------------


def test_a_call_runs_in_the_executing_process_and_a_retry_never_runs_again(url: str,
                                                                           runtimes: list[AssetRuntime]) -> None:
    a, b = make(url, runtimes), make(url, runtimes)
    a.start()
    b.start()
    executor = owner(a, b)
    caller = b if executor is a else a
    cid = str(uuid.uuid4())
    first = caller.call("move", {"x": 3.0}, sender_uuid="http", correlation_id=cid)
    assert (first.status, first.result) == ("OK", {"x": 3.0})
    assert executor.counters["commands_ok"] == 1 and caller.counters["commands_ok"] == 0
    again = executor.call("move", {"x": 3.0}, sender_uuid="http", correlation_id=cid)
    assert again == first and ran == [("move", 3.0)]
    with pytest.raises(CallConflict):
        caller.call("move", {"x": 4.0}, sender_uuid="http", correlation_id=cid)
    # restart everything: the book is read back from the log
    for runtime in (a, b):
        runtime.stop(2.0)
    c = make(url, runtimes)
    c.start()
    assert c.call("move", {"x": 3.0}, sender_uuid="http", correlation_id=cid) == first
    assert c.find_call(cid).result == first
    # the same command record written again is suppressed, not run
    c.transport.publish(command_record("CALLS", "move", new_envelope("S", {"x": 3.0}, correlation_id=cid)))
    marker = c.call("move", {"x": 9.0}, sender_uuid="http")
    assert marker.status == "OK" and ran == [("move", 3.0), ("move", 9.0)]


def test_no_executor_means_a_bounded_wait_then_pending_and_run_anywhere_runs_here(
        url: str, runtimes: list[AssetRuntime]) -> None:
    first = make(url, runtimes)
    first.start()  # the executor group's position is set, then nobody executes
    first.stop(2.0)
    idle = make(url, runtimes, execute_commands=False, call_wait=0.2)
    idle.start()
    with pytest.raises(CallPending) as pending:
        idle.call("move", {"x": 1.0}, sender_uuid="http")
    assert idle.find_call(pending.value.correlation_id).result is None  # in the log, not answered
    assert idle.invoke("where", {}, sender_uuid="http").result == "here"
    executor = make(url, runtimes)
    executor.start()  # the call written earlier runs now
    wait_for(lambda: (entry := idle.find_call(pending.value.correlation_id)) and entry.result, 10,
             "the pending call's result")
    assert ran == [("move", 1.0)]


def test_sync_makes_a_read_see_what_another_process_wrote(url: str, runtimes: list[AssetRuntime]) -> None:
    a, b = make(url, runtimes), make(url, runtimes)
    a.start()
    b.start()
    for i in range(50):
        a.set("position", float(i))
        b.sync(5.0)
        assert b.value("position") == float(i)


def test_reads_follow_a_sqlite_log_put_back_from_an_older_copy(tmp_path: Path, runtimes: list[AssetRuntime]) -> None:
    """The copy lacks the last writes and new ones take their offsets again: another
    process's follower reads them (it kept only its offset before, and skipped them for good)."""
    db = tmp_path / "calls.db"
    url = f"sqlite:///{db}"
    a, b = make(url, runtimes), make(url, runtimes)
    a.start()
    b.start()
    executor = owner(a, b)
    caller = b if executor is a else a
    a.set("position", 1.0)
    assert caller.call("move", {"x": 1.0}, sender_uuid="http").status == "OK"
    older = tmp_path / "older.db"
    with closing(sqlite3.connect(db)) as source, closing(sqlite3.connect(older)) as copy:
        source.backup(copy)
    for value in (2.0, 3.0):
        a.set("position", value)
        assert caller.call("move", {"x": value}, sender_uuid="http").status == "OK"
    b.sync(5.0)
    assert b.value("position") == 3.0
    with closing(sqlite3.connect(db)) as conn:  # the -wal left beside the file holds none of them
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    os.unlink(db)
    os.rename(older, db)
    wait_for(lambda: a.transport.health().ok and b.transport.health().ok, 5, "both to resume on the older copy")

    for value in (4.0, 5.0, 6.0):
        a.set("position", value)
        wait_for(lambda value=value: b.value("position") == value, 5, f"b to show {value}")
    b.sync(5.0)
    assert b.value("position") == 6.0
    # the executor's reader went back too: a call written now runs, once
    assert caller.call("move", {"x": 4.0}, sender_uuid="http", wait=5.0).status == "OK"
    assert ran == [("move", x) for x in (1.0, 2.0, 3.0, 4.0)]


def test_a_stopping_process_hands_the_role_over_at_once(url: str, runtimes: list[AssetRuntime]) -> None:
    leaving = threading.Event()
    a = make(url, runtimes)
    a.start(eligible=lambda: not leaving.is_set())
    b = make(url, runtimes)
    b.start()
    assert owner(a, b) is a  # started first, took the role
    leaving.set()
    wait_for(lambda: executing(b) and not executing(a), 10, "the role to move to the process that stays")
    assert b.call("move", {"x": 5.0}, sender_uuid="http").status == "OK"


def test_start_up_records_once_per_deployment_and_unavailable_from_the_last(
        url: str, runtimes: list[AssetRuntime]) -> None:
    a, b = make(url, runtimes), make(url, runtimes)
    a.start()
    b.start()

    def writes(attr: str) -> list[Any]:
        book = a.transport
        if hasattr(book, "log"):
            return [v for k, v in book.log.entries if k == "CALLS" and f'"{attr}"' in (v or b"").decode()]
        import sqlite3
        from contextlib import closing
        with closing(sqlite3.connect(book.path)) as conn:  # type: ignore[attr-defined]
            rows = conn.execute("SELECT value FROM log WHERE key = 'CALLS'").fetchall()
        return [v for (v,) in rows if f'"{attr}"' in (v.decode() if isinstance(v, bytes) else v)]

    assert len(writes("AssetType")) == 1 and len(writes("avail")) == 1
    a.stop(2.0)
    assert len(writes("avail")) == 1  # b still serves: no UNAVAILABLE
    b.stop(2.0)
    avail = writes("avail")
    assert len(avail) == 2 and "UNAVAILABLE" in (avail[-1].decode() if isinstance(avail[-1], bytes) else avail[-1])
