"""``current_openfactory.storage["name"]`` from ``STORAGE``: the reference's schema and API,
without its bugs (paths leaving the root, the host path as the root of a local storage)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app_factory import build_app
from flask_openfactory import ConfigurationError, FlaskOpenFactory, current_openfactory
from flask_openfactory.runtime.storage import Storage, StorageConfigError, StorageError, parse_storage
from flask_openfactory.settings import defaults


def local(mount_point: str, local_path: str = "/srv/host/data", **extra: Any) -> dict[str, Any]:
    return {"type": "local", "local_path": local_path, "mount_point": mount_point, **extra}


NFS = {"type": "nfs", "server": "nas.factory.lan", "remote_path": "/exports/ofa", "mount_point": "/mnt/nas"}


@pytest.mark.parametrize("storage, message", [
    ("{", "STORAGE is not valid JSON"),
    ("[]", "must be a JSON object"),
    ({"bad name": local("/data")}, "must match ^[a-zA-Z0-9_-]+$"),
    ({"d": "x"}, "must be an object"),
    ({"d": {"type": "s3"}}, "'type' must be 'local' or 'nfs'"),
    ({"d": {"type": "local", "mount_point": "/data"}}, "local_path required for type 'local'"),
    ({"d": local("/data", colour="red")}, "extra field(s) not permitted for type 'local': colour"),
    ({"d": local("data")}, "'mount_point' must be an absolute path"),
    ({"d": local("/data/../etc")}, "must not contain '..'"),
    ({"d": local("/da ta")}, "may only contain letters"),
    ({"d": local("/" + "a" * 255)}, "longer than 255"),
    ({"d": local("/data", local_path="relative")}, "'local_path' must be an absolute path"),
    ({"d": {**NFS, "server": "nas_1!"}}, "'server' must be a hostname"),
    ({"d": {**NFS, "server": "300.1.1.1"}}, "not a valid IP address"),
    ({"d": {**NFS, "server": "[zz::1]"}}, "not a valid IP address"),
    ({"d": {**NFS, "remote_path": "exports"}}, "'remote_path' must be an absolute path"),
    ({"d": {**NFS, "mount_options": "ro"}}, "'mount_options' must be a list"),
    ({"d": {**NFS, "mount_point": 5}}, "'mount_point' must be a string"),
])
def test_storage_is_validated_like_the_reference(storage: Any, message: str) -> None:
    with pytest.raises(StorageConfigError) as info:
        parse_storage(storage if isinstance(storage, str) else json.dumps(storage))
    assert message in str(info.value)


def test_valid_entries_and_their_mounts() -> None:
    configs = parse_storage(json.dumps({
        "data": local("/data", description="results"),
        "nas": {**NFS, "mount_options": ["ro", "soft"]},
        "v6": {**NFS, "server": "[fd00::5]"},
        "ip": {**NFS, "server": "10.0.0.7"},
    }))
    assert set(configs) == {"data", "nas", "v6", "ip"}
    assert configs["data"].mount_spec() == {"type": "bind", "source": "/srv/host/data", "target": "/data"}
    assert not configs["data"].compatible_with_swarm and configs["nas"].compatible_with_swarm
    spec = configs["nas"].mount_spec()
    assert spec["driver_options"] == {"type": "nfs", "o": "addr=nas.factory.lan,ro,soft,nfsvers=4",
                                      "device": ":/exports/ofa"}
    assert spec["source"].startswith("nfs_nas_factory_lan__exports_ofa_") and spec["target"] == "/mnt/nas"
    assert parse_storage(None) == {} and parse_storage("") == {}


@pytest.fixture
def root(tmp_path: Path) -> Storage:
    (tmp_path / "root").mkdir()
    (tmp_path / "outside.txt").write_text("secret")
    return Storage(parse_storage({"d": local(str(tmp_path / "root"))})["d"])


def test_open_exists_delete_listdir(root: Storage) -> None:
    with root.open("runs/2026/a.csv", "w") as f:  # parent directories are created for writing
        f.write("x,y\n")
    assert root.exists("runs/2026/a.csv") and root.listdir("runs") == ["2026"]
    with root.open(os.path.join(root.root, "runs/2026/a.csv")) as f:  # absolute, under the root
        assert f.read() == "x,y\n"
    root.delete("runs/2026/a.csv")
    assert not root.exists("runs/2026/a.csv")
    with pytest.raises(FileNotFoundError):
        root.delete("runs/2026/a.csv")
    with pytest.raises(FileNotFoundError):
        root.open("missing.txt")


@pytest.mark.parametrize("path", ["../outside.txt", "runs/../../outside.txt", "/etc/passwd", "link/outside.txt"])
def test_paths_that_leave_the_root_are_refused(root: Storage, path: str) -> None:
    os.symlink(os.path.dirname(root.root), os.path.join(root.root, "link"))  # a symlink out of the root
    for use in (root.open, root.exists, root.delete, root.listdir):
        with pytest.raises(StorageError, match="is outside storage 'd'"):
            use(path)


def test_the_root_is_the_mount_point(tmp_path: Path) -> None:
    mount, host = tmp_path / "mnt", tmp_path / "host"
    mount.mkdir(), host.mkdir()
    config = parse_storage({"d": local(str(mount), local_path=str(host))})["d"]
    assert Storage(config).root == str(mount)  # in the container: the mount point, not the host path
    mount.rmdir()
    assert Storage(config).root == str(host)  # on the host (development), the host path


def test_current_openfactory_storage_from_the_storage_variable(tmp_path: Path) -> None:
    env = {"STORAGE": json.dumps({"data": local(str(tmp_path))})}
    app = build_app(__name__, {"TESTING": True, "OPENFACTORY_APP_UUID": "STORE-TEST",
                               "OPENFACTORY_TRANSPORT_URL": f"memory://s-{uuid.uuid4()}",
                               "OPENFACTORY_STORAGE": defaults(str(tmp_path), environ=env)["OPENFACTORY_STORAGE"]},
                    add_api=False)
    with app.app_context():
        with current_openfactory.storage["data"].open("hello.txt", "w") as f:
            f.write("hi")
        assert (tmp_path / "hello.txt").read_text() == "hi"
        with pytest.raises(KeyError):
            current_openfactory.storage["other"]


def test_a_bad_storage_variable_stops_init_app_with_the_key_named() -> None:
    app = Flask(__name__)
    app.config.update(OPENFACTORY_APP_UUID="STORE-TEST", OPENFACTORY_TRANSPORT_URL="memory://s",
                      OPENFACTORY_STORAGE='{"d": {"type": "local", "mount_point": "/data"}}')
    with pytest.raises(ConfigurationError,
                       match="OPENFACTORY_STORAGE: STORAGE\\['d'\\]: field\\(s\\) local_path required"):
        FlaskOpenFactory(add_api=False).init_app(app)
