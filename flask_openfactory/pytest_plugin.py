"""pytest fixtures for testing an OpenFactory app (entry point ``pytest11: openfactory``).

Name the app in the pytest configuration::

    [pytest]
    openfactory_app = myapp:create_app      # a factory, or an app object
    openfactory_config = testing            # passed to the factory; the default

or define an ``ofa_app`` fixture in ``conftest.py``. Fixtures (per test):
``ofa_app`` the app, ``ofa`` an ``OpenFactoryTester`` (runtime started, stopped
at teardown), ``ofa_runtime`` its started runtime, ``ofa_client`` the app's
test client, ``ofa_cli`` its CLI runner.

Importing this module costs nothing but pytest: the package is imported when
a fixture is first used, so test suites that never use it are unaffected.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient, FlaskCliRunner

    from .runtime import AssetRuntime
    from .testing import OpenFactoryTester

APP_OPTION = "openfactory_app"
CONFIG_OPTION = "openfactory_config"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(APP_OPTION, "flask-openfactory: the app under test for the ofa_* fixtures, "
                  "'package.module:create_app' (a factory) or 'package.module:app'", default="")
    parser.addini(CONFIG_OPTION, "flask-openfactory: config name passed to the factory named by "
                  f"{APP_OPTION} as its first argument (empty: called without arguments)", default="testing")


def _fail(message: str) -> NoReturn:
    pytest.fail(message, pytrace=False)


def load_app(target: str, config_name: str | None) -> Flask:
    """The app named by ``module:name``: an app object, or a factory called with ``config_name``."""
    from flask import Flask

    module_name, _, attr = target.strip().partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return _fail(f"{APP_OPTION} = {target}: cannot import {module_name!r} ({exc}); "
                     "is the project on sys.path (pytest's 'pythonpath = .', or an installed package)?")
    names = [attr] if attr else ["create_app", "make_app", "app", "application"]
    obj: Any = None
    for name in names:
        obj = module
        try:
            for part in name.split("."):
                obj = getattr(obj, part)
            break
        except AttributeError:
            obj = None
    if obj is None:
        return _fail(f"{APP_OPTION} = {target}: module {module_name!r} has no {' or '.join(names)}")
    if not isinstance(obj, Flask):
        if not callable(obj):
            return _fail(f"{APP_OPTION} = {target}: {obj!r} is neither a Flask app nor a factory")
        app = obj(config_name) if config_name and _takes_an_argument(obj) else obj()
        if not isinstance(app, Flask):
            return _fail(f"{APP_OPTION} = {target}: the factory returned {app!r}, not a Flask app")
        obj = app
    from .state import find_state

    if find_state(obj) is None:
        return _fail(f"{APP_OPTION} = {target}: the app has no OpenFactory extension "
                     "(call 'ofa.init_app(app)' in its factory)")
    return isolate(obj, target)


def isolate(app: Flask, target: str) -> Flask:
    """The app under test on an in-process log of its own, whatever its factory chose.

    A factory that ignores ``config_name`` would otherwise write into the
    development database (or a live broker) that a running server executes.
    """
    import uuid

    from .state import get_state

    state = get_state(app)
    url = state.runtime.settings.transport_url
    if url.startswith("memory://"):
        return app
    try:
        state.use_transport(f"memory://pytest-{uuid.uuid4().hex}")
    except RuntimeError as exc:
        return _fail(f"{APP_OPTION} = {target}: the factory used the asset's log ({exc}); the tests must "
                     "not write into a real log: use a memory:// transport in the testing config and "
                     "no attribute or method calls in the factory")
    return app


def _takes_an_argument(factory: Any) -> bool:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in parameters)


@pytest.fixture
def ofa_app(request: pytest.FixtureRequest) -> Flask:
    """The app under test, from the ``openfactory_app`` ini option (override in conftest.py)."""
    target = str(request.config.getini(APP_OPTION) or "").strip()
    if not target:
        return _fail(f"the ofa_* fixtures need the app under test: set '{APP_OPTION} = package:create_app' "
                     "in the pytest configuration (pytest.ini, [tool:pytest] of setup.cfg, "
                     "[tool.pytest.ini_options] of pyproject.toml), or define an 'ofa_app' fixture "
                     "in conftest.py")
    config_name = str(request.config.getini(CONFIG_OPTION) or "").strip() or None
    return load_app(target, config_name)


@pytest.fixture
def ofa(ofa_app: Flask) -> Iterator[OpenFactoryTester]:
    """The app's runtime started, driven as other assets drive it; stopped at teardown."""
    from .testing import OpenFactoryTester

    with OpenFactoryTester(ofa_app) as tester:
        yield tester


@pytest.fixture
def ofa_runtime(ofa: OpenFactoryTester) -> AssetRuntime:
    """The app's asset runtime, started (stopped at teardown)."""
    return ofa.runtime


@pytest.fixture
def ofa_client(ofa: OpenFactoryTester) -> FlaskClient:
    """The app's test client; the runtime is started (and stopped at teardown)."""
    return ofa.client


@pytest.fixture
def ofa_cli(ofa: OpenFactoryTester) -> FlaskCliRunner:
    """The app's CLI runner (``ofa_cli.invoke(args=["ofa", "call", "home"])``); the runtime runs."""
    return ofa.cli
