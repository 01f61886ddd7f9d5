"""File storage from the platform's ``STORAGE`` variable: ``current_openfactory.storage["name"]``.

``STORAGE`` is a JSON object, name -> backend, which the platform's deployer
writes from the app's configuration and mounts into the container. The
entries are validated as the reference validates them (same schema, same
reasons in the messages), at configuration time and without I/O. Two of the
reference's bugs are fixed: a path can never leave the storage's root (``..``
and symlinks included), and a ``local`` storage's root is its mount point in
the container (the reference used the host's path, which the container lacks).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

_NAME = re.compile(r"[a-zA-Z0-9_-]+")
_MOUNT_POINT = re.compile(r"[A-Za-z0-9._/-]+")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_WRITE_MODES = ("w", "a", "x")


class StorageConfigError(ValueError):
    """``STORAGE`` (or one of its entries) does not follow the platform's schema."""


class StorageError(ValueError):
    """A path that the storage refuses (it would leave the storage's root)."""


@dataclass(frozen=True, slots=True)
class StorageConfig:
    name: str
    type: str  # "local" or "nfs"
    mount_point: str
    local_path: str | None = None
    server: str | None = None
    remote_path: str | None = None
    mount_options: tuple[str, ...] = ()
    description: str | None = None

    @property
    def compatible_with_swarm(self) -> bool:
        """A bind mount needs the path on whichever node runs the task; NFS does not."""
        return self.type == "nfs"

    def mount_spec(self) -> dict[str, Any]:
        """The Docker mount the deployer makes for this storage."""
        if self.type == "local":
            return {"type": "bind", "source": self.local_path, "target": self.mount_point}
        options = list(self.mount_options)
        if not any(o.startswith("nfsvers=") for o in options):
            options.append("nfsvers=4")
        volume = f"nfs_{(self.server or '').replace('.', '_')}_{(self.remote_path or '').replace('/', '_')}"
        if self.mount_options:
            volume += "_" + hashlib.sha1(",".join(sorted(self.mount_options)).encode()).hexdigest()[:8]
        return {"type": "volume", "source": volume, "target": self.mount_point,
                "driver": "local", "driver_options": {"type": "nfs", "o": ",".join([f"addr={self.server}", *options]),
                                                      "device": f":{self.remote_path}"}}


_FIELDS = {
    "local": ({"type", "local_path", "mount_point"}, {"description"}),
    "nfs": ({"type", "server", "remote_path", "mount_point"}, {"mount_options", "description"}),
}


def parse_storage(value: str | Mapping[str, Any] | None) -> dict[str, StorageConfig]:
    """``STORAGE`` (JSON text or an already decoded mapping) to checked configs, by name."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise StorageConfigError(f"STORAGE is not valid JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise StorageConfigError(f"STORAGE must be a JSON object of name -> storage, got {type(value).__name__}")
    return {name: _parse_entry(name, entry) for name, entry in value.items()}


def _parse_entry(name: Any, entry: Any) -> StorageConfig:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise StorageConfigError(f"STORAGE name {name!r} must match ^[a-zA-Z0-9_-]+$")

    def fail(text: str) -> StorageConfigError:
        return StorageConfigError(f"STORAGE[{name!r}]: {text}")

    if not isinstance(entry, Mapping):
        raise fail(f"must be an object, got {type(entry).__name__}")
    kind = entry.get("type")
    if kind not in _FIELDS:
        raise fail(f"'type' must be 'local' or 'nfs', got {kind!r}")
    required, optional = _FIELDS[kind]
    missing = sorted(required - set(entry))
    if missing:
        raise fail(f"field(s) {', '.join(missing)} required for type {kind!r}")
    extra = sorted(set(entry) - required - optional)
    if extra:
        raise fail(f"extra field(s) not permitted for type {kind!r}: {', '.join(map(str, extra))}")
    for key in (required | optional) - {"mount_options"}:
        if key in entry and not isinstance(entry[key], str) and not (key == "description" and entry[key] is None):
            raise fail(f"{key!r} must be a string, got {entry[key]!r}")
    mount_point = _mount_point(entry["mount_point"], fail)
    if kind == "local":
        local_path = entry["local_path"]
        if not os.path.isabs(local_path):
            raise fail(f"'local_path' must be an absolute path, got {local_path!r}")
        return StorageConfig(name, kind, mount_point, local_path=local_path, description=entry.get("description"))
    remote_path = entry["remote_path"]
    if not remote_path.startswith("/"):
        raise fail(f"'remote_path' must be an absolute path, got {remote_path!r}")
    options = entry.get("mount_options") or []
    if not isinstance(options, list) or not all(isinstance(o, str) and o.strip() for o in options):
        raise fail(f"'mount_options' must be a list of non-empty strings, got {options!r}")
    return StorageConfig(name, kind, mount_point, server=_server(entry["server"], fail), remote_path=remote_path,
                         mount_options=tuple(o.strip() for o in options), description=entry.get("description"))


def _mount_point(value: str, fail: Any) -> str:
    if not value.startswith("/"):
        raise fail(f"'mount_point' must be an absolute path, got {value!r}")
    if len(value) > 255:
        raise fail(f"'mount_point' is longer than 255 characters ({len(value)})")
    if not _MOUNT_POINT.fullmatch(value):
        raise fail(f"'mount_point' may only contain letters, digits, '.', '_', '/' and '-', got {value!r}")
    if ".." in value.split("/"):
        raise fail(f"'mount_point' must not contain '..', got {value!r}")
    return value


def _server(value: str, fail: Any) -> str:
    host = value.strip()
    try:
        if host.startswith("[") and host.endswith("]"):
            ipaddress.IPv6Address(host[1:-1])
            return host
        if re.fullmatch(r"[0-9.]+", host):
            ipaddress.IPv4Address(host)
            return host
    except ValueError:
        raise fail(f"'server' {value!r} is not a valid IP address") from None
    if 0 < len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in host.split(".")):
        return host
    raise fail(f"'server' must be a hostname, an IPv4 address or a bracketed IPv6 address, got {value!r}")


class Storage:
    """Files under one root; every path is checked to stay inside it."""

    def __init__(self, config: StorageConfig, root: str | None = None) -> None:
        self.config = config
        self.root = os.path.realpath(root if root is not None else _root_of(config))

    @property
    def compatible_with_swarm(self) -> bool:
        return self.config.compatible_with_swarm

    def mount_spec(self) -> dict[str, Any]:
        return self.config.mount_spec()

    def path(self, path: str = "") -> str:
        """The real path of ``path`` (relative to the root, or absolute under it)."""
        if not isinstance(path, str):
            raise TypeError(f"storage paths are strings, got {type(path).__name__}")
        joined = os.path.realpath(os.path.join(self.root, path))  # an absolute path replaces the root
        if os.path.commonpath([joined, self.root]) != self.root:
            raise StorageError(f"path {path!r} is outside storage {self.config.name!r} (root {self.root})")
        return joined

    def open(self, path: str, mode: str = "r", **kwargs: Any) -> IO[Any]:
        """Like ``open``; writing creates the missing parent directories."""
        full = self.path(path)
        if any(m in mode for m in _WRITE_MODES):
            os.makedirs(os.path.dirname(full), exist_ok=True)
        return open(full, mode, **kwargs)

    def exists(self, path: str) -> bool:
        return os.path.exists(self.path(path))

    def delete(self, path: str) -> None:
        """Remove a file; FileNotFoundError when there is none."""
        os.remove(self.path(path))

    def listdir(self, path: str = "") -> list[str]:
        return sorted(os.listdir(self.path(path)))

    def __repr__(self) -> str:
        return f"Storage({self.config.name!r}, type={self.config.type!r}, root={self.root!r})"


def _root_of(config: StorageConfig) -> str:
    """The mount point, as in the container; on a host without it (development), a local
    storage falls back to its host path."""
    if config.type == "local" and not os.path.isdir(config.mount_point) and config.local_path \
            and os.path.isdir(config.local_path):
        return config.local_path
    return config.mount_point


def open_storages(configs: Mapping[str, StorageConfig]) -> dict[str, Storage]:
    return {name: Storage(config) for name, config in configs.items()}
