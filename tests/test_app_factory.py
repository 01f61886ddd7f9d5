"""This repository's app: config by name, environment overrides, the demo asset."""

import json

import pytest

from demo import create_app
from flask_openfactory import ConfigurationError


def test_default_config_is_development_on_sqlite_in_the_instance_folder(monkeypatch):
    monkeypatch.delenv("FLASK_CONFIG", raising=False)
    app = create_app()
    assert app.config["OPENFACTORY_CONFIG_NAME"] == "development"
    url = app.config["OPENFACTORY_TRANSPORT_URL"]
    assert url.startswith("sqlite:///") and url.endswith("openfactory.sqlite3")
    assert app.instance_path in url


def test_flask_config_environment_variable_selects_the_config(monkeypatch):
    monkeypatch.setenv("FLASK_CONFIG", "testing")
    app = create_app()
    assert app.config["TESTING"] is True
    assert app.config["OPENFACTORY_TRANSPORT_URL"].startswith("memory://testing-")


def test_unknown_config_name_is_a_clear_error():
    with pytest.raises(ConfigurationError, match="unknown config 'staging'"):
        create_app("staging")


@pytest.mark.parametrize("missing", ["KAFKA_BROKER", "APP_UUID", "SECRET_KEY"])
def test_production_refuses_to_start_naming_the_missing_variable(monkeypatch, missing):
    env = {"KAFKA_BROKER": "127.0.0.1:9", "APP_UUID": "APP-1", "SECRET_KEY": "s3cret"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(missing)
    with pytest.raises(ConfigurationError, match=missing):
        create_app("production")


def test_production_builds_the_kafka_transport_from_the_environment(monkeypatch):
    monkeypatch.setenv("KAFKA_BROKER", "127.0.0.1:9")
    monkeypatch.setenv("APP_UUID", "APP-1")
    monkeypatch.setenv("SECRET_KEY", "s3cret")
    app = create_app("production")
    assert app.config["OPENFACTORY_TRANSPORT_URL"] == "kafka://127.0.0.1:9"
    assert app.extensions["openfactory"].runtime.asset_uuid == "APP-1"
    assert app.config["SECRET_KEY"] == "s3cret"


def test_prefixed_environment_and_settings_file_override_without_code(monkeypatch, tmp_path):
    settings = tmp_path / "settings.py"
    settings.write_text("OPENFACTORY_COMMAND_MAX_AGE = 42.0\n")
    monkeypatch.setenv("OPENFACTORY_SETTINGS", str(settings))
    monkeypatch.setenv("FLASK_OPENFACTORY_COMMAND_TIMEOUT", "7")
    app = create_app("testing")
    assert app.config["OPENFACTORY_COMMAND_MAX_AGE"] == 42.0
    assert app.config["OPENFACTORY_COMMAND_TIMEOUT"] == 7
    assert app.extensions["openfactory"].runtime.settings.command_timeout == 7.0


def test_demo_machine_moves_by_command_and_keeps_host_routes():
    app = create_app("testing")
    runtime = app.extensions["openfactory"].runtime
    runtime.start()
    try:
        _, result = runtime.send_command(runtime.asset_uuid, "move_axis", {"x": "3", "y": "4"}, wait=5)
        assert result.status == "OK"
        assert result.result == {"x": 3.0, "y": 4.0, "speed": 100}
        _, home = runtime.send_command(runtime.asset_uuid, "home", wait=5)
        assert home.status == "OK"
        index = app.test_client().get("/")
        assert index.status_code == 200
        body = json.loads(index.data)
        assert body["attributes"]["position_x"] == 0.0
        assert body["methods"] == ["home", "move_axis"]
    finally:
        runtime.stop(2.0)
