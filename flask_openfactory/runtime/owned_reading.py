"""The one loop that reads a log as its owner: the dispatcher's commands and a subscription's updates.

Both read through a ``CommandReader``: among all processes, one owns the log
at a time and reads it from the committed position. Each gain of ownership
(a new ``generation``) replays what the previous owner read but did not
commit, so what is read then is held back until the reader has caught up with
the log's end, and released in one go: only then does live handling start,
and a replayed command whose result is further on is never run again. After
each handled poll, what is done is committed. A failing reader is closed and
opened again after a backoff, until the loop is told to stop.

What is held, released, handled and committed is the owner's part
(:class:`OwnedLog`); the order of those steps is this module's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from ..transports.base import CommandReader, LogEntry
from .backoff import Backoff


class OwnedLog(Protocol):
    """What the loop asks of its owner, in the order it asks it."""

    def open_reader(self) -> CommandReader | None:
        """A new reader, or None when none should be opened now (the loop waits and asks again)."""

    def poll_timeout(self) -> float: ...

    def keep_reading(self, reader: CommandReader) -> bool:
        """Asked before each poll: False ends this reader's pass (``finished`` follows)."""

    def polled(self, reader: CommandReader, entries: list[LogEntry]) -> None:
        """Every poll's entries, before anything else sees them."""

    def took_over(self) -> None:
        """A new gain of ownership: forget what an earlier one held back."""

    def hold(self, entries: list[LogEntry]) -> None:
        """Entries read while catching up."""

    def release(self) -> bool:
        """Caught up: handle what was held. False when a stop cut it short (nothing is committed)."""

    def handle(self, entries: list[LogEntry]) -> bool:
        """Entries read live. False when a stop cut it short (nothing is committed)."""

    def commit(self, reader: CommandReader) -> None:
        """Everything handled so far is done: commit what may be committed."""

    def finished(self, reader: CommandReader) -> None:
        """This reader's pass ended without an error (stopped, or ``keep_reading`` said no)."""

    def failed(self, error: Exception) -> None:
        """The reader or a step failed: note it and close the reader; the loop retries after a backoff."""


def retry_until_stopped(attempt: Callable[[], None], *, stop: threading.Event, backoff: Backoff,
                        failed: Callable[[Exception], None]) -> None:
    """Run ``attempt`` again and again until ``stop``: after a failure, ``failed`` is told and the
    next attempt waits the backoff's delay; an attempt that returns starts the count again."""
    while not stop.is_set():
        try:
            attempt()
            backoff.succeeded()
        except Exception as exc:  # whatever the backend does, the loop lives on
            failed(exc)
            stop.wait(backoff.failed())


def read_as_owner(owner: OwnedLog, *, stop: threading.Event, backoff: Backoff, idle_wait: float) -> None:
    """Open a reader and read it (``_read_pass``), again after every failure, until ``stop``."""

    def attempt() -> None:
        reader = owner.open_reader()
        if reader is None:
            stop.wait(idle_wait)
            return
        _read_pass(owner, reader, stop)
        owner.finished(reader)

    retry_until_stopped(attempt, stop=stop, backoff=backoff, failed=owner.failed)


def _read_pass(owner: OwnedLog, reader: CommandReader, stop: threading.Event) -> None:
    generation = 0
    recovering = False
    while not stop.is_set():
        if not owner.keep_reading(reader):
            return
        entries = reader.poll(owner.poll_timeout())
        owner.polled(reader, entries)
        if reader.generation != generation:
            generation, recovering = reader.generation, True
            owner.took_over()
        if recovering:
            owner.hold(entries)
            if not reader.caught_up():
                continue
            recovering = False
            done = owner.release()
        else:
            done = owner.handle(entries)
        if not done:
            return  # stopped half-way: not committed, the next owner reads it again
        owner.commit(reader)
