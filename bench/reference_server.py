"""The reference implementation's way to serve HTTP, for ``http_vs_reference_server``.

openfactory-core runs ``werkzeug.serving.make_server(host, port, app)`` in a
thread of the app's process: Werkzeug's development server, single-threaded
(``threaded=False``), one process. Here it serves ``bench.apps.plain_app()``
(no extension at all) with request logging off, which only flatters the
baseline. Prints the port it bound, then serves until killed.
"""

from __future__ import annotations

import sys
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server

from harness.apps import plain_app


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


def main() -> None:
    server = make_server("127.0.0.1", 0, plain_app(), request_handler=_Quiet)
    print(server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
