"""``flask ofa``: inspect the asset and call its methods from a shell.

Every command runs in a short-lived process of its own (the ``flask`` CLI), so
none starts the runtime's threads: they read the transport's snapshot and send
commands exactly as another asset would, through the same log the serving
process executes from. Every transport call is bounded in time (``deadline``),
so a Kafka cluster that is down, or a sqlite file that cannot be opened, gives a
one-line error naming the transport instead of a hang or a traceback.

Exit codes of ``call``: 0 OK, 1 ERROR, 2 REJECTED, 3 no result in time,
4 bad usage, 5 the transport failed. ``status``, ``attributes``: 1 when the
transport does not answer.

Importing the package registers every command on ``ofa_cli``.
"""

from .calls import call_command, result_command
from .group import (
    EXIT_ERROR,
    EXIT_NO_RESULT,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_TIMEOUT,
    EXIT_TRANSPORT,
    EXIT_USAGE,
    ofa_cli,
)
from .inspection import attributes_command, methods_command, status_command

__all__ = [
    "EXIT_ERROR",
    "EXIT_NO_RESULT",
    "EXIT_OK",
    "EXIT_REJECTED",
    "EXIT_TIMEOUT",
    "EXIT_TRANSPORT",
    "EXIT_USAGE",
    "attributes_command",
    "call_command",
    "methods_command",
    "ofa_cli",
    "result_command",
    "status_command",
]
