"""/ofa/docs in a real headless browser: Debian's chromium driven by Playwright, "Try it out" on a method.

Served by gunicorn (the repository's app, sqlite), reached directly and
through a gateway that strips a path prefix as the platform's does, with and
without ``X-Forwarded-Prefix``. A screenshot of each page is kept in
``test-artifacts/`` (CI keeps that folder). No browser is downloaded: the
system's chromium is used (``OFA_CHROMIUM`` overrides its path).
"""

from __future__ import annotations

import http.client
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.gunicorn_server import GunicornServer, ServerPool, server_env
from harness.paths import REPO

pytestmark = [pytest.mark.browser, pytest.mark.gunicorn]  # see the markers in setup.cfg

ARTIFACTS = REPO / "test-artifacts"
PREFIX = "/oven-7"


def chromium() -> str:
    path = os.environ.get("OFA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "the browser tests need Debian's chromium (apt-get install -y chromium; .ci/run installs it)"
    return path


class Gateway(ThreadingHTTPServer):
    """Forwards ``PREFIX/...`` to the app with the prefix stripped, as the platform's Traefik does."""

    daemon_threads = True

    def __init__(self, upstream_port: int, *, forward_prefix: bool) -> None:
        super().__init__(("127.0.0.1", 0), _GatewayHandler)
        self.upstream_port = upstream_port
        self.forward_prefix = forward_prefix

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{PREFIX}"


class _GatewayHandler(BaseHTTPRequestHandler):
    server: Gateway

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _forward(self) -> None:
        if not (self.path == PREFIX or self.path.startswith(PREFIX + "/")):
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        if self.server.forward_prefix:
            headers["X-Forwarded-Prefix"] = PREFIX
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=30)
        try:
            upstream.request(self.command, self.path[len(PREFIX):] or "/", body=body or None, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _forward


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright  # the test extra installs it; a missing one fails

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        yield browser
        browser.close()


def serve(servers: ServerPool, tmp_path: Path, **env: str) -> GunicornServer:
    asset = f"DOCS-{uuid.uuid4().hex[:8]}"
    return servers.start(env=server_env({
        "FLASK_CONFIG": "development", "APP_UUID": asset,
        "FLASK_OPENFACTORY_TRANSPORT_URL": f"sqlite:///{tmp_path / 'log.sqlite3'}", **env,
    }), app="wsgi:app", workers=1)


def try_it_out(browser: object, docs_url: str, name: str) -> str:
    """Open the docs, run move_axis with "Try it out"; the request URL Swagger UI shows."""
    page = browser.new_page()  # type: ignore[attr-defined]
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        page.goto(docs_url)
        operation = page.locator(".opblock-post", has_text="/ofa/methods/move_axis")
        operation.locator(".opblock-summary").click()
        operation.locator("button.try-out__btn").click()
        operation.locator("textarea.body-param__text").fill('{"x": 12.5, "y": -3, "speed": 40}')
        operation.locator("button.execute").click()
        status = operation.locator(".live-responses-table tbody .response-col_status").first
        status.wait_for(timeout=15_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"docs-{name}.png"), full_page=True)
        assert status.inner_text().strip() == "200", operation.locator(".live-responses-table").inner_text()
        body = operation.locator(".live-responses-table tbody .response-col_description").first.inner_text()
        assert '"status": "OK"' in body and '"x": 12.5' in body, body
        assert failed == [], f"requests that failed: {failed}"
        return str(operation.locator(".request-url pre").inner_text()).strip()
    finally:
        page.close()


def test_try_it_out_without_a_prefix(browser: object, servers: ServerPool, tmp_path: Path) -> None:
    server = serve(servers, tmp_path)
    request_url = try_it_out(browser, server.url + "/ofa/docs", "no-prefix")
    assert request_url == server.url + "/ofa/methods/move_axis"


@pytest.mark.parametrize(("forward_prefix", "root_path"), [(False, PREFIX), (True, "")],
                         ids=["root-path-env", "x-forwarded-prefix"])
def test_try_it_out_behind_a_gateway_that_strips_the_prefix(
        browser: object, servers: ServerPool, tmp_path: Path, forward_prefix: bool, root_path: str) -> None:
    server = serve(servers, tmp_path, **({"OPENFACTORY_ROOT_PATH": root_path} if root_path else {}))
    gateway = Gateway(server.port, forward_prefix=forward_prefix)
    thread = threading.Thread(target=gateway.serve_forever, daemon=True)
    thread.start()
    try:
        name = "gateway-" + ("x-forwarded-prefix" if forward_prefix else "root-path")
        request_url = try_it_out(browser, gateway.url + "/ofa/docs", name)
        assert request_url == gateway.url + "/ofa/methods/move_axis"
    finally:
        gateway.shutdown()
        gateway.server_close()
        thread.join(5)
