"""What only the sqlite transport promises: a file shared by real processes.

The common semantics are in test_transport_conformance.py; here are the URL
and path rules, durability, locking, and the multi-process guarantees checked
with real OS processes (subprocesses and fork).
"""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

import pytest

from flask_openfactory.transports import (
    ConfigurationError,
    LogEntry,
    TransportBusy,
    TransportError,
    TransportOptions,
    create_transport,
)
from flask_openfactory.transports.sqlite import SqliteTransport
from test_transport_conformance import contains, follow_until, publish_all, read_until, record, wait_for

KEY = "ASSET-A"
GROUP = "executors"
ROOT = Path(__file__).resolve().parents[1]


def open_sqlite(path: Path, publish_timeout: float = 5.0) -> SqliteTransport:
    transport = create_transport(f"sqlite:///{path}", TransportOptions(publish_timeout=publish_timeout))
    assert isinstance(transport, SqliteTransport)
    return transport


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "openfactory.db"


@pytest.fixture
def transport(db: Path) -> Iterator[SqliteTransport]:
    transport = open_sqlite(db)
    yield transport
    transport.close()


def count_rows(path: Path, table: str) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# --- URLs and paths ---------------------------------------------------------------


def test_relative_and_absolute_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = create_transport("sqlite:///var/app.db")
    assert relative.path == str(tmp_path / "var" / "app.db")
    absolute = create_transport(f"sqlite:///{tmp_path}/abs.db")
    assert absolute.url.startswith("sqlite:////")
    assert absolute.path == str(tmp_path / "abs.db")
    assert absolute.display_url == absolute.url
    assert not (tmp_path / "var").exists()  # nothing is created before first use


@pytest.mark.parametrize(
    "url", ["sqlite://app.db", "sqlite:///", "sqlite:///:memory:", "sqlite:///data/", "sqlite:///a.db?mode=ro"]
)
def test_malformed_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError, match="sqlite"):
        create_transport(url)


def test_a_directory_is_not_a_database(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="is a directory") as caught:
        create_transport(f"sqlite:///{tmp_path}")
    assert str(tmp_path) in str(caught.value)


def test_a_file_in_the_way_of_the_directory(tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_text("x")
    with pytest.raises(ConfigurationError, match="not a directory") as caught:
        create_transport(f"sqlite:///{tmp_path}/plain.txt/sub/app.db")
    assert str(tmp_path / "plain.txt") in str(caught.value)


def test_parent_directories_are_created_and_wal_is_on(db: Path, transport: SqliteTransport) -> None:
    assert not db.parent.exists()
    transport.publish(record(KEY, "avail", "AVAILABLE"))
    assert db.is_file()
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"log", "state", "committed"} <= tables


# --- durability, locking, health -----------------------------------------------------


def test_state_and_committed_position_survive_a_restart(db: Path) -> None:
    first = open_sqlite(db)
    avail = record(KEY, "avail", "AVAILABLE")
    first.publish(avail)
    reader = first.command_reader(KEY, GROUP)
    wait_for(lambda: reader.poll(0.01) == [] and reader.owns)
    commands = [record(KEY, "run_CMD", n) for n in range(2)]
    for command in commands:
        first.publish(command)
    got = read_until(reader, lambda entries: len(entries) >= 2)
    reader.commit(got[0].offset)
    first.close()
    assert not reader.owns  # closing the transport gave up its readers' locks

    second = open_sqlite(db)
    assert second.snapshot(KEY) == {"avail": avail, "run_CMD": commands[1]}
    successor = second.command_reader(KEY, GROUP)
    assert [entry.record for entry in read_until(successor, contains(commands[1]))] == [commands[1]]
    second.close()


def test_a_locked_database_makes_publish_busy_then_recovers(db: Path) -> None:
    transport = open_sqlite(db, publish_timeout=0.3)
    transport.publish(record(KEY, "first", 1))
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    delivered: list[Exception | None] = []
    started = time.monotonic()
    with pytest.raises(TransportBusy, match="locked") as caught:
        transport.publish(record(KEY, "second", 2), delivered.append)
    elapsed = time.monotonic() - started
    assert str(db) in str(caught.value)
    assert 0.25 <= elapsed < 2.0
    assert delivered == []
    blocker.execute("ROLLBACK")
    blocker.close()

    transport.publish(record(KEY, "third", 3), delivered.append)
    assert delivered == [None]
    assert set(transport.snapshot(KEY)) == {"first", "third"}
    assert transport.stats()["published"] == 2 and transport.stats()["failed"] == 1
    transport.close()


def test_threads_get_their_own_connections(transport: SqliteTransport, db: Path) -> None:
    connections: list[sqlite3.Connection] = []
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for n in range(25):
                transport.publish(record(KEY, f"t{index}", n))
            connections.append(transport.connection())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert len({id(conn) for conn in connections}) == 4
    assert count_rows(db, "log") == 100
    assert {attribute: rec.value for attribute, rec in transport.snapshot(KEY).items()} == {
        f"t{index}": 24 for index in range(4)
    }


def test_lock_files_sit_next_to_the_database(transport: SqliteTransport, db: Path) -> None:
    reader = transport.command_reader(KEY, GROUP)
    other = transport.command_reader(KEY, "another/group name")
    assert Path(reader.lock_path).parent == db.parent
    assert Path(reader.lock_path).name.startswith(db.name)
    assert reader.lock_path != other.lock_path
    assert Path(other.lock_path).is_file()
    reader.close()
    other.close()


def test_reader_returns_only_its_own_keys_entries(transport: SqliteTransport) -> None:
    reader = transport.command_reader(KEY, GROUP)
    wait_for(lambda: reader.poll(0.01) == [] and reader.owns)
    transport.publish(record("ASSET-Z", "run_CMD", 1))
    ours = record(KEY, "run_CMD", 2)
    transport.publish(ours)
    got: list[LogEntry] = []
    wait_for(lambda: got.extend(reader.poll(0.05)) or contains(ours)(got), interval=0)
    assert [entry.key for entry in got] == [KEY]
    assert reader.caught_up()
    reader.close()


def test_health_names_the_path_and_fails_once_closed(transport: SqliteTransport, db: Path) -> None:
    health = transport.check(1.0)
    assert health.ok and str(db) in health.detail
    transport.close()
    health = transport.health()
    assert not health.ok and "closed" in health.detail
    with pytest.raises(TransportError, match="closed"):
        transport.publish(record(KEY, "late", 1))


# --- a file put back --------------------------------------------------------------


def copy_of(db: Path, target: Path) -> bytes:
    """A copy made with sqlite's backup API while the transport runs, as the README says."""
    with closing(sqlite3.connect(db)) as source, closing(sqlite3.connect(target)) as copy:
        source.backup(copy)
    return target.read_bytes()


def healed(transport: SqliteTransport) -> bool:
    return transport.health().ok


def test_a_copy_put_back_is_opened_only_once_whole_and_the_wal_beside_it_survives(
        transport: SqliteTransport, db: Path, tmp_path: Path) -> None:
    """SQLite deletes the ``-wal`` beside an empty database it opens, under the
    wal-index every other process still maps: an empty or half-written file at the
    path is judged without SQLite and left alone until the copy is whole."""
    publish_all(transport, record(KEY, "x", 1))
    content = copy_of(db, tmp_path / "good.sqlite3")
    wal = Path(f"{db}-wal")
    os.unlink(db)
    assert "was deleted" in transport.health().detail

    with open(db, "wb") as f:  # the copy has begun: an empty file at the path
        f.flush()
        empty = transport.check(1.0)
        assert not empty.ok and "not a whole SQLite database (0 bytes" in empty.detail, empty.detail
        assert wal.exists(), "the -wal beside the log was deleted by a look at an empty file"
        f.write(content[: len(content) // 2 + 100])
        f.flush()
        half = transport.check(1.0)
        assert not half.ok and "not a whole SQLite database" in half.detail, half.detail
        f.write(content[len(content) // 2 + 100:])

    wait_for(lambda: healed(transport), 5.0, "the transport to resume on the whole copy")
    publish_all(transport, record(KEY, "x", 2))
    assert count_rows(db, "log") >= 2


def test_a_follower_past_the_end_of_an_older_copy_follows_what_is_written_next(
        transport: SqliteTransport, db: Path, tmp_path: Path) -> None:
    """Put back from an older copy, the log ends before a follower's position and new
    records take those offsets again: the follower goes back to the last row it had read
    that the copy holds, and reads what was written since, not past it."""
    follower = transport.follow(KEY)
    publish_all(transport, record(KEY, "x", 1))
    copy_of(db, tmp_path / "older.sqlite3")
    lost = [record(KEY, "x", value) for value in (2, 3)]
    publish_all(transport, *lost)
    follow_until(follower, contains(lost[-1]))
    with closing(sqlite3.connect(db)) as conn:  # into the file: the -wal left beside it holds none of them
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    os.unlink(db)
    os.rename(tmp_path / "older.sqlite3", db)
    wait_for(lambda: healed(transport), 5.0, "the transport to resume on the older copy")

    after = [record(KEY, "x", value) for value in (4, 5, 6)]  # before the follower looks again
    publish_all(transport, *after)
    assert follow_until(follower, contains(after[-1])) == after
    resumed = transport.follow(KEY, resume=follower)
    follower.close()
    more = record(KEY, "x", 7)
    publish_all(transport, more)
    assert follow_until(resumed, contains(more)) == [more]
    resumed.close()


# --- real processes ------------------------------------------------------------


@contextmanager
def python(code: str) -> Iterator[subprocess.Popen[str]]:
    """A child interpreter running ``code``; killed and reaped on the way out."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    ) as child:
        try:
            yield child
        finally:
            child.kill()
            child.wait(10)


def read_line(process: subprocess.Popen[str], timeout: float = 15.0) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"no output from the child process within {timeout}s"
    return process.stdout.readline().strip()


CHILD_PRELUDE = """
import sys, time
from flask_openfactory.wire.protocol import Record
from flask_openfactory.transports import create_transport
transport = create_transport(sys.argv[1] if len(sys.argv) > 1 else {url!r})
"""


def test_processes_starting_together_share_one_log(db: Path) -> None:
    code = CHILD_PRELUDE.format(url=f"sqlite:///{db}") + """
name = sys.stdin.readline().strip()
for n in range(50):
    transport.publish(Record.create("ASSET-A", name, n, tag="t", type="Events"))
print("done", flush=True)
"""
    with ExitStack() as stack:
        children = [stack.enter_context(python(code)) for _ in range(4)]
        for index, child in enumerate(children):  # released together, onto a fresh file
            assert child.stdin is not None
            child.stdin.write(f"p{index}\n")
            child.stdin.flush()
        for child in children:
            assert read_line(child) == "done"
            assert child.wait(15) == 0
    assert count_rows(db, "log") == 200
    reader_side = open_sqlite(db)
    snapshot = reader_side.snapshot(KEY)
    reader_side.close()
    assert {attribute: rec.value for attribute, rec in snapshot.items()} == {f"p{n}": 49 for n in range(4)}


def test_another_process_sees_a_record_well_within_a_second(transport: SqliteTransport) -> None:
    follower = transport.follow(KEY)
    code = CHILD_PRELUDE.format(url=transport.url) + """
transport.snapshot("warm-up")
print("ready", flush=True)
sys.stdin.readline()
transport.publish(Record.create("ASSET-A", "from_child", 1, tag="t", type="Events"))
print("published", flush=True)
"""
    with python(code) as child:
        assert read_line(child) == "ready"
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        started = time.monotonic()
        got = wait_for(lambda: follower.poll(0.05), timeout=5.0, interval=0)
        assert time.monotonic() - started < 0.5
        assert [(rec.id, rec.value) for rec in got] == [("from_child", 1)]
        assert read_line(child) == "published"


def test_a_killed_owner_hands_over_at_once(transport: SqliteTransport) -> None:
    code = CHILD_PRELUDE.format(url=transport.url) + """
reader = transport.command_reader("ASSET-A", "executors")
while not reader.owns:
    reader.poll(0.05)
print("owner", flush=True)
time.sleep(600)
"""
    with python(code) as child:
        assert read_line(child) == "owner"
        reader = transport.command_reader(KEY, GROUP)
        assert reader.poll(0.3) == [] and not reader.owns
        pending = record(KEY, "run_CMD", "while the other process owned")
        transport.publish(pending)
        assert reader.poll(0.2) == [] and not reader.owns

        os.kill(child.pid, signal.SIGKILL)
        killed = time.monotonic()
        got = read_until(reader, contains(pending), timeout=5.0)
        assert time.monotonic() - killed < 1.0
        assert reader.owns and reader.generation == 1
        assert [entry.record for entry in got] == [pending]
        reader.close()


class ForkedChild:
    """The parent's view of a forked child that ran a check and waits to be released."""

    def __init__(self, pid: int, result_fd: int) -> None:
        self.pid, self.result_fd = pid, result_fd

    def checked(self, timeout: float = 10.0) -> bool:
        """Whether the child's check held; waits for it to finish."""
        ready, _, _ = select.select([self.result_fd], [], [], timeout)
        assert ready, f"the forked child did not finish its check within {timeout}s"
        return os.read(self.result_fd, 1) == b"0"


@contextmanager
def forked(check: Callable[[], bool]) -> Iterator[ForkedChild]:
    """Run ``check`` in a forked child that stays alive until the block ends."""
    result_read, result_write = os.pipe()
    release_read, release_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe and its status
        status = 3
        try:
            os.close(release_write)
            os.close(result_read)
            status = 0 if check() else 1
            os.write(result_write, str(status).encode())
            os.read(release_read, 1)  # stay alive, holding whatever was inherited
        except BaseException:
            status = 2
        finally:
            os._exit(status)
    os.close(release_read)
    os.close(result_write)
    try:
        yield ForkedChild(pid, result_read)
    finally:
        os.close(release_write)
        os.close(result_read)
        os.waitpid(pid, 0)


def run_in_fork(check: Callable[[], bool]) -> bool:
    with forked(check) as child:
        return child.checked()


def test_a_forked_child_opens_its_own_connection(transport: SqliteTransport) -> None:
    transport.publish(record(KEY, "before_fork", 1))
    parent_connection = transport.connection()

    def child() -> bool:
        own = transport.connection()
        transport.publish(record(KEY, "from_child", 2))
        return own is not parent_connection and "from_child" in transport.snapshot(KEY)

    assert run_in_fork(child)
    assert transport.connection() is parent_connection
    parent_connection.execute("SELECT 1").fetchone()  # still open: the child never closed it
    transport.publish(record(KEY, "after_fork", 3))
    assert set(transport.snapshot(KEY)) == {"before_fork", "from_child", "after_fork"}


def test_a_forked_child_does_not_inherit_ownership(transport: SqliteTransport, db: Path) -> None:
    reader = transport.command_reader(KEY, GROUP)
    wait_for(lambda: reader.poll(0.01) == [] and reader.owns)

    def child() -> bool:
        if reader.owns or reader.poll(0.05) != []:
            return False
        rival = open_sqlite(db).command_reader(KEY, GROUP)
        return rival.poll(0.2) == [] and not rival.owns  # the parent still holds the lock

    command = record(KEY, "run_CMD", 1)
    with forked(child) as process:
        assert process.checked()
        assert reader.owns
        transport.publish(command)
        assert [entry.record for entry in read_until(reader, contains(command))] == [command]
        rival = open_sqlite(db).command_reader(KEY, GROUP)
        assert rival.poll(0.1) == [] and not rival.owns
        # With the child still alive, closing the parent's reader must free the
        # lock: the child dropped its inherited descriptor of the lock file.
        reader.close()
        # The command was never committed, so the next owner gets it again.
        assert [entry.record for entry in read_until(rival, contains(command))] == [command]
        rival.close()


def test_an_owner_that_forked_and_died_hands_over_at_once(transport: SqliteTransport) -> None:
    # As with gunicorn --preload gone wrong: the owner forks, then dies; its
    # still-running child must not keep the election lock alive.
    code = CHILD_PRELUDE.format(url=transport.url) + """
import os
reader = transport.command_reader("ASSET-A", "executors")
while not reader.owns:
    reader.poll(0.05)
child = os.fork()
if child == 0:
    time.sleep(600)
    os._exit(0)
print(child, flush=True)
time.sleep(600)
"""
    with python(code) as owner:
        grandchild = int(read_line(owner))
        try:
            reader = transport.command_reader(KEY, GROUP)
            assert reader.poll(0.2) == [] and not reader.owns
            os.kill(owner.pid, signal.SIGKILL)
            killed = time.monotonic()
            wait_for(lambda: reader.poll(0.05) == [] and reader.owns, timeout=5.0, interval=0)
            assert time.monotonic() - killed < 1.0
            reader.close()
        finally:
            os.kill(grandchild, signal.SIGKILL)
