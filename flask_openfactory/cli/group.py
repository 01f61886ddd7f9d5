"""The ``flask ofa`` command group, its exit codes, and how a command finds the runtime or fails.

Exit codes of ``call``: 0 OK, 1 ERROR, 2 REJECTED, 3 no result in time,
4 bad usage, 5 the transport failed, 6 sent to an asset that does not answer
with results. ``status``, ``attributes``: 1 when the transport does not answer.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import click
from flask import current_app
from flask.cli import AppGroup

from ..runtime import AssetRuntime
from ..state import find_state
from ..wire.commands import ERROR, OK, REJECTED

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_REJECTED = 2
EXIT_TIMEOUT = 3
EXIT_USAGE = 4
EXIT_TRANSPORT = 5
EXIT_NO_RESULT = 6

STATUS_EXIT = {OK: EXIT_OK, ERROR: EXIT_ERROR, REJECTED: EXIT_REJECTED}


def _quiet_library_logs(verbose: bool) -> None:
    """Keep the library's log lines (librdkafka retries: dozens) from burying the one-line error."""
    if verbose:
        return
    logger = logging.getLogger("flask_openfactory")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    click.get_current_context().call_on_close(lambda: logger.setLevel(previous))


ofa_cli = AppGroup(
    "ofa",
    help="Inspect this app's OpenFactory asset and call its methods through the transport.",
    params=[click.Option(["-v", "--verbose"], is_flag=True,
                         help="Show the library's log lines (transport retries and the like).")],
    callback=_quiet_library_logs,
)


def current_runtime() -> AssetRuntime:
    state = find_state(current_app)
    if state is None:
        fail("the current Flask app has no OpenFactory extension: call 'ofa.init_app(app)'", EXIT_USAGE)
    return state.runtime


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    raise click.exceptions.Exit(code)
