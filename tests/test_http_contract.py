"""The demo's HTTP API under real gunicorn keeps the contract of its own OpenAPI document.

schemathesis (its CLI, as CI and a user run it) generates requests from
``/ofa/openapi.json`` with all of its checks: status codes, content types,
response schemas, headers, that invalid input is refused and valid input
accepted, that the documented auth is enforced, ``Allow`` on ``OPTIONS`` and
405, and stateful sequences. Bounded by examples per operation, not by time,
so a run costs seconds; the seed is random and printed, so any failure can be
replayed. A canary run against a deliberately wrong copy of the document shows
that the harness reports what it finds.

The edges of the protocol are checked here too, on the wire: ``OPTIONS`` per
route against the document, unknown verbs, and what gunicorn (the shipped
``gunicorn.conf.py``) answers itself before the app sees a request.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from harness.gunicorn_server import GunicornServer, ServerPool, server_env
from probe_apps import TESTS

pytestmark = pytest.mark.gunicorn  # see the markers in setup.cfg

EXAMPLES = 50  # per operation and phase: about 700 requests per run
RUN_TIMEOUT = 300.0  # a hard bound; a run takes seconds
PHASES = ("coverage", "fuzzing", "stateful")
TOKEN = secrets.token_urlsafe(24)
VERBS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "TRACE", "PROPFIND", "FOO")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    servers = ServerPool(tmp_path_factory.mktemp("http-contract"), pythonpath=TESTS)
    yield servers
    servers.close()


def demo_server(pool: ServerPool, **config: str) -> GunicornServer:
    """``gunicorn wsgi:app`` (the demo, the repository's gunicorn.conf.py) on its own sqlite log."""
    db = pool.directory / f"demo-{uuid.uuid4().hex[:8]}.sqlite3"
    env = server_env({"FLASK_CONFIG": "development", "FLASK_OPENFACTORY_TRANSPORT_URL": f"sqlite:///{db}",
                      "APP_UUID": f"CONTRACT-{uuid.uuid4().hex[:8]}", **config})
    return pool.start(env=env, app="wsgi:app", workers=2)


@pytest.fixture(scope="module")
def open_server(pool: ServerPool) -> GunicornServer:
    return demo_server(pool)


@pytest.fixture(scope="module")
def token_server(pool: ServerPool) -> GunicornServer:
    return demo_server(pool, FLASK_OPENFACTORY_API_TOKENS=TOKEN)


def schemathesis(workdir: Path, name: str, location: str, *options: str) -> tuple[dict[str, Any], str]:
    """Run ``schemathesis run`` with every check; its JSON report and its output."""
    report = workdir / f"schemathesis-{name}.json"
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", location,
        "--checks", "all", "--workers", "1", "--generation-database", "none",
        "--request-timeout", "30", "--no-color",
        "--report", "json", "--report-json-path", str(report), *options,
    ]
    started = time.monotonic()
    done = subprocess.run(command, cwd=workdir, env={**os.environ, "NO_COLOR": "1"}, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT)
    output = done.stdout + done.stderr
    assert report.exists(), f"schemathesis wrote no report (exit {done.returncode}):\n{output}"
    result = json.loads(report.read_text())
    cases = result["test_cases"]
    print(f"\nschemathesis {name}: exit {done.returncode}, {cases['generated']} test cases, "
          f"{cases['unique_failures']} unique failures, seed {result['seed']}, "
          f"{time.monotonic() - started:.1f} s")
    return result, output


def operations(spec: dict[str, Any]) -> list[tuple[str, str]]:
    return [(method.upper(), path) for path, item in spec["paths"].items()
            for method in item if method in ("get", "put", "post", "delete", "patch", "head", "options")]


@pytest.mark.parametrize("tokens", [False, True], ids=["open", "api-tokens"])
def test_schemathesis_finds_nothing(request: pytest.FixtureRequest, pool: ServerPool, tokens: bool) -> None:
    server: GunicornServer = request.getfixturevalue("token_server" if tokens else "open_server")
    headers = {"Authorization": f"Bearer {TOKEN}"} if tokens else {}
    spec = requests.get(f"{server.url}/ofa/openapi.json", headers=headers, timeout=10).json()
    documented = operations(spec)
    secured = [op for op in documented if spec["paths"][op[1]][op[0].lower()].get("security")]
    if tokens:  # the check that a request without the token is refused runs on these
        assert sorted(secured) == sorted(op for op in documented if op[1].startswith("/ofa/methods/"))
    else:
        assert secured == []
    auth = ["--header", f"Authorization: Bearer {TOKEN}"] if tokens else []
    result, output = schemathesis(pool.directory, request.node.callspec.id, f"{server.url}/ofa/openapi.json",
                                  "--max-examples", str(EXAMPLES), *auth)

    assert result["exit_code"] == 0 and not result["failures"] and not result["errors"], output
    assert (result["complete"], result["stop_reason"]) == (True, "completed"), output
    counts = result["operations"]
    assert counts["tested"] == counts["total"] == len(documented), output
    assert counts["errored"] == counts["skipped"] == 0, output
    phases = {name: phase["status"] for name, phase in result["phases"].items()}
    assert phases.pop("examples") in ("success", "skip")  # skipped: the document declares no examples
    assert phases == dict.fromkeys(PHASES, "success")
    cases = result["test_cases"]
    assert cases["with_failures"] == cases["unique_failures"] == cases["errored"] == 0, output
    assert cases["generated"] >= 10 * len(documented), output
    assert not any(result["warnings"].values()), result["warnings"]


def test_schemathesis_reports_a_document_the_server_does_not_keep(pool: ServerPool,
                                                                  open_server: GunicornServer) -> None:
    """The canary: the same harness fails against a copy of the document that lies about the server."""
    spec = open_server.get("/ofa/openapi.json").json()
    spec["components"]["schemas"]["Health"]["required"].append("canary")  # a field /health never has
    spec["paths"]["/ofa/health"]["delete"] = {"responses": {"204": {"description": "not served"}}}
    lying = pool.directory / "lying-openapi.json"
    lying.write_text(json.dumps(spec))
    result, output = schemathesis(pool.directory, "canary", str(lying), "--url", open_server.url,
                                  "--include-path", "/ofa/health", "--phases", "examples,coverage,fuzzing",
                                  "--max-examples", "5")
    assert result["exit_code"] != 0, output
    found = {(failure["code"], tuple(failure["operations"])) for failure in result["failures"]}
    assert ("ST108", ("GET /ofa/health",)) in found, output  # response violates the schema
    assert ("ST205", ("OPTIONS /ofa/health",)) in found, output  # Allow differs from the document


# -- the edges, on the wire ------------------------------------------------------------------


def allow(methods: list[str]) -> str:
    """What ``Allow`` says for a route serving ``methods``: GET brings HEAD, every route OPTIONS."""
    order = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    served = set(methods) | {"OPTIONS"} | ({"HEAD"} if "GET" in methods else set())
    return ", ".join(m for m in order if m in served)


def test_options_on_each_route_lists_what_the_document_and_the_server_serve(open_server: GunicornServer) -> None:
    spec = open_server.get("/ofa/openapi.json").json()
    routes = {path.replace("{attribute_id}", "position_x"): allow([m.upper() for m in item if m != "parameters"])
              for path, item in spec["paths"].items()}
    assert len(routes) == len(spec["paths"]) >= 8
    routes |= {"/ofa/openapi.json": allow(["GET"]), "/ofa/docs": allow(["GET"]),  # not documented, served
               "/ofa/docs/static/swagger-ui.css": allow(["GET"]), "/ofa/methods/no_such_method": allow(["POST"])}
    summary = []
    for path, expected in routes.items():
        response = requests.options(open_server.url + path, timeout=10)
        summary.append(f"OPTIONS {path}: {response.status_code} Allow: {response.headers.get('Allow')}")
        assert (response.status_code, response.headers.get("Allow")) == (200, expected), path
        assert response.content == b"" and "Content-Type" not in response.headers, path
        for verb in VERBS:
            answer = requests.request(verb, open_server.url + path, timeout=10)
            if verb in expected.split(", "):
                assert answer.status_code != 405, (verb, path)
                continue
            assert (answer.status_code, answer.headers.get("Allow")) == (405, expected), (verb, path)
            assert answer.headers["Content-Type"] == "application/json", (verb, path)
            if verb != "HEAD":
                assert answer.json()["code"] == 405, (verb, path)
    print("\n" + "\n".join(summary))


def raw_request(server: GunicornServer, data: bytes) -> tuple[int, str, bytes]:
    """Send bytes as they are (no client fixes them up); the status, content type and body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    types = [line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith("content-type:")]
    return int(lines[0].split()[1]), types[0] if types else "", body


def request_line_of(length: int) -> bytes:
    """``GET /ofa/attributes?type=aaa… HTTP/1.1`` of exactly ``length`` bytes."""
    start, end = b"GET /ofa/attributes?type=", b" HTTP/1.1"
    return start + b"a" * (length - len(start) - len(end)) + end


def header_line_of(length: int) -> bytes:
    """An ``X-Correlation-ID`` header line of ``length`` bytes, its CRLF included (gunicorn's count)."""
    name = b"X-Correlation-ID: "
    return name + b"a" * (length - len(name) - 2) + b"\r\n"


CLOSE = b"Host: test\r\nConnection: close\r\n"


def test_what_the_app_answers_and_what_gunicorn_refuses_first(open_server: GunicornServer) -> None:
    """The shipped limits (README, Deploying): within them the API answers JSON; beyond them gunicorn, HTML."""
    line_ok, line_over = request_line_of(8190), request_line_of(8191)
    assert (len(line_ok), len(line_over)) == (8190, 8191)
    status, mimetype, body = raw_request(open_server, line_ok + b"\r\n" + CLOSE + b"\r\n")
    assert (status, mimetype) == (422, "application/json")  # over gunicorn's default 4094: the app's answer
    assert json.loads(body)["errors"]["query"]["type"]
    assert raw_request(open_server, line_over + b"\r\n" + CLOSE + b"\r\n")[:2] == (414, "text/html")

    post = b"POST /ofa/methods/home HTTP/1.1\r\nContent-Length: 0\r\n" + CLOSE
    status, mimetype, body = raw_request(open_server, post + header_line_of(8190) + b"\r\n")
    assert (status, mimetype) == (400, "application/json")  # the app read the header: not a correlation id
    assert "X-Correlation-ID must be a UUID in canonical form" in json.loads(body)["message"]
    assert raw_request(open_server, post + header_line_of(8191) + b"\r\n")[:2] == (431, "text/html")

    health = b"GET /ofa/health HTTP/1.1\r\n" + CLOSE  # 2 header fields
    fields = [b"X-Field-%d: v\r\n" % i for i in range(99)]
    assert raw_request(open_server, health + b"".join(fields[:98]) + b"\r\n")[:2] == (200, "application/json")
    assert raw_request(open_server, health + b"".join(fields) + b"\r\n")[:2] == (431, "text/html")

    # a method name gunicorn does not take as one (lower case): its 400, before any routing
    assert raw_request(open_server, b"trace /ofa/health HTTP/1.1\r\n" + CLOSE + b"\r\n")[:2] == (400, "text/html")
