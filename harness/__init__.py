"""What the test suite and the benchmarks both run on: brokers, servers, clients, waits, load.

``tests/`` and ``bench/`` import from here and never from each other. The
modules are imported one by one (``from harness.broker import TansuBroker``):
this package re-exports nothing, so using one piece never loads the others.
"""

__all__: list[str] = []
