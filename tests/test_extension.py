"""The extension per the Flask guide: factory, per-app state, no I/O in init_app."""

import os
import threading

import pytest
from flask import Flask

from app_factory import build_app_and_extension
from flask_openfactory import (
    AssetBlueprint,
    ConfigurationError,
    FlaskOpenFactory,
    SampleAttribute,
    current_openfactory,
)

bp = AssetBlueprint("unit", __name__)
level = bp.attribute(SampleAttribute("level", tag="Level", default=1.0))


@bp.ofa_method()
def bump(by: float = 1.0) -> float:
    level.set(level.value + by)
    return level.value


def make_app(**config):
    return build_app_and_extension(__name__, config, blueprints=[bp])


def open_fds():
    fds = {}
    for fd in os.listdir(f"/proc/{os.getpid()}/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/{os.getpid()}/fd/{fd}")
        except OSError:
            pass
    return fds


def test_init_app_creates_no_thread_socket_or_file(tmp_path):
    # Compare identities, not counts: threads of earlier tests may still be winding down.
    threads, fds = set(threading.enumerate()), open_fds()
    app, _ = make_app(OPENFACTORY_TRANSPORT_URL=f"sqlite:///{tmp_path}/never.db")
    assert set(threading.enumerate()) - threads == set()
    opened = {fd: target for fd, target in open_fds().items() if fds.get(fd) != target}
    opened.pop(next((fd for fd, t in opened.items() if t.startswith("/proc/")), None), None)  # the listdir itself
    assert opened == {}
    assert not (tmp_path / "never.db").exists()
    assert not app.extensions["openfactory"].runtime.started


def test_init_app_twice_is_a_clear_error():
    app, ofa = make_app(OPENFACTORY_TRANSPORT_URL="memory://twice")
    with pytest.raises(RuntimeError, match="already been registered"):
        ofa.init_app(app)


def test_single_app_constructor_and_setdefaults():
    app = Flask(__name__)
    app.config["OPENFACTORY_TRANSPORT_URL"] = "memory://single"
    FlaskOpenFactory(app)
    assert "openfactory" in app.extensions
    for key in ("OPENFACTORY_URL_PREFIX", "OPENFACTORY_COMMAND_MAX_AGE", "OPENFACTORY_KAFKA_CONFIG"):
        assert key in app.config


def test_two_apps_with_different_configs_side_by_side(tmp_path):
    one, _ = make_app(OPENFACTORY_TRANSPORT_URL="memory://one", OPENFACTORY_APP_UUID="ONE")
    two, _ = make_app(OPENFACTORY_TRANSPORT_URL=f"sqlite:///{tmp_path}/two.db", OPENFACTORY_APP_UUID="TWO")
    rt1, rt2 = one.extensions["openfactory"].runtime, two.extensions["openfactory"].runtime
    rt1.start()
    rt2.start()
    try:
        with one.app_context():
            assert current_openfactory.asset_uuid == "ONE"
            level.set(5.0)
        with two.app_context():
            assert current_openfactory.asset_uuid == "TWO"
            assert level.value == 1.0
            assert current_openfactory.transport.scheme == "sqlite"
        _, result = rt2.send_command("TWO", "bump", {"by": "2"}, wait=5)
        assert result.result == 3.0
        assert rt1.get("level").value == 5.0
    finally:
        rt1.stop(2.0)
        rt2.stop(2.0)


def test_current_openfactory_without_the_extension_says_what_to_do():
    app = Flask(__name__)
    with app.app_context(), pytest.raises(RuntimeError, match="init_app"):
        _ = current_openfactory.asset_uuid


def test_asset_blueprint_before_init_app_is_a_clear_error():
    app = Flask(__name__)
    other = AssetBlueprint("early", __name__)
    with pytest.raises(RuntimeError, match="before 'app.register_blueprint"):
        app.register_blueprint(other)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("OPENFACTORY_TRANSPORT_URL", "redis://x", "unknown scheme"),
        ("OPENFACTORY_TRANSPORT_URL", "nothing", "must look like"),
        ("OPENFACTORY_COMMAND_TIMEOUT", "soon", "must be a float"),
        ("OPENFACTORY_COMMAND_CONCURRENCY", 0, "at least 1"),
        ("OPENFACTORY_EXECUTE_COMMANDS", "perhaps", "true or false"),
        ("OPENFACTORY_APP_UUID", "has.dot", "cannot route"),
        ("OPENFACTORY_KAFKA_CONFIG", "acks=all", "dict of librdkafka"),
        ("OPENFACTORY_URL_PREFIX", "ofa", "start with '/'"),
        ("OPENFACTORY_ROOT_PATH", "app", "start with '/'"),
    ],
)
def test_bad_config_fails_in_init_app_naming_the_key(key, value, message):
    app = Flask(__name__)
    app.config.update({"OPENFACTORY_TRANSPORT_URL": "memory://cfg", key: value})
    with pytest.raises(ConfigurationError, match=message) as info:
        FlaskOpenFactory(app)
    assert key in str(info.value) or key == "OPENFACTORY_TRANSPORT_URL"


def test_swarm_replicas_without_slot_is_a_configuration_error(monkeypatch):
    monkeypatch.setenv("APP_UUID", "APP")
    monkeypatch.setenv("SWARM_REPLICAS", "3")
    monkeypatch.delenv("SWARM_TASK_SLOT", raising=False)
    app = Flask(__name__)
    app.config["OPENFACTORY_TRANSPORT_URL"] = "memory://swarm"
    with pytest.raises(ConfigurationError, match="SWARM_TASK_SLOT"):
        FlaskOpenFactory(app)
    monkeypatch.setenv("SWARM_TASK_SLOT", "2")
    app2 = Flask(__name__)
    app2.config["OPENFACTORY_TRANSPORT_URL"] = "memory://swarm"
    FlaskOpenFactory(app2)
    assert app2.extensions["openfactory"].runtime.asset_uuid == "APP-2"


def test_runtime_starts_before_the_first_request_once(tmp_path):
    app, _ = make_app(OPENFACTORY_TRANSPORT_URL="memory://first-request")

    @app.get("/hello")
    def hello():
        return {"started": current_openfactory.started}

    runtime = app.extensions["openfactory"].runtime
    try:
        client = app.test_client()
        assert client.get("/hello").json == {"started": True}
        first = runtime.started_at
        assert client.get("/hello").json == {"started": True}
        assert runtime.started_at == first
    finally:
        runtime.stop(2.0)


def test_root_path_and_proxy_headers():
    app, _ = make_app(OPENFACTORY_TRANSPORT_URL="memory://proxy", OPENFACTORY_ROOT_PATH="/my-app",
                      OPENFACTORY_START_ON_REQUEST=False)
    assert app.config["APPLICATION_ROOT"] == "/my-app"

    @app.get("/where")
    def where():
        from flask import redirect, url_for

        return redirect(url_for("where", _external=True) + "?x=1")

    response = app.test_client().get(
        "/where", headers={"X-Forwarded-Prefix": "/gw", "X-Forwarded-Host": "factory.example",
                           "X-Forwarded-Proto": "https"})
    assert response.headers["Location"] == "https://factory.example/gw/where?x=1"


def test_shell_context_has_the_runtime():
    app, _ = make_app(OPENFACTORY_TRANSPORT_URL="memory://shell")
    context = app.make_shell_context()
    assert context["ofa"] is app.extensions["openfactory"].runtime
