"""Every config key the extension reads: defaults, validation, one prefix.

``apply_defaults`` is the one place that ``setdefault``s keys (the README's
config table mirrors ``DEFAULTS``); ``runtime_settings`` turns the app's config
into validated settings, so a bad value fails in ``init_app`` with the key's
name rather than later in a worker.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from werkzeug.utils import import_string

from .runtime import RuntimeSettings
from .runtime.metrics_registry import MetricsTarget
from .runtime.storage import StorageConfigError, parse_storage
from .transports import ConfigurationError, TransportOptions, check_url
from .wire.commands import DEFAULT_MAX_ARGUMENTS, DEFAULT_MAX_COMMAND_BYTES, ArgumentLimits
from .wire.protocol import validate_identifier
from .wire.signing import MIN_SECRET_LENGTH, SigningKeys

PREFIX = "OPENFACTORY_"


def platform_uuid(environ: Mapping[str, str]) -> str:
    """``APP_UUID``, suffixed with the Swarm task slot when replicated (contract 1)."""
    uuid = environ.get("APP_UUID") or "DEV-UUID"
    raw_replicas = environ.get("SWARM_REPLICAS", "1") or "1"
    try:
        replicas = int(raw_replicas)
    except ValueError:
        raise ConfigurationError(f"SWARM_REPLICAS must be a whole number, got {raw_replicas!r}") from None
    if replicas > 1:
        slot = environ.get("SWARM_TASK_SLOT")
        if not slot:
            raise ConfigurationError(
                f"SWARM_REPLICAS is {replicas} but SWARM_TASK_SLOT is not set: "
                "each replica needs its slot to form its asset UUID"
            )
        uuid = f"{uuid}-{slot}"
    return uuid


def default_transport_url(instance_path: str, environ: Mapping[str, str]) -> str:
    """The platform's ``KAFKA_BROKER`` when deployed, else the embedded sqlite log."""
    broker = (environ.get("KAFKA_BROKER") or "").strip()
    if broker:
        return f"kafka://{broker}"
    return f"sqlite:///{os.path.join(instance_path, 'openfactory.sqlite3')}"


def defaults(instance_path: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The platform's environment (contract section 1) is the default under the app's config."""
    env = os.environ if environ is None else environ
    return {
        "OPENFACTORY_CONFIG_NAME": None,  # shown by `flask ofa status`
        "OPENFACTORY_APP_UUID": None,  # None: from APP_UUID / SWARM_* (contract section 1)
        "OPENFACTORY_TRANSPORT_URL": default_transport_url(instance_path, env),
        "OPENFACTORY_KAFKA_CONFIG": {},
        "OPENFACTORY_KSQLDB_URL": env.get("KSQLDB_URL") or None,
        "OPENFACTORY_ASSETS_TOPIC": None,
        "OPENFACTORY_KAFKA_ELECTION": "lock",
        "OPENFACTORY_LOCK_DIR": None,
        "OPENFACTORY_CONSUMER_GROUP": None,
        "OPENFACTORY_EXECUTE_COMMANDS": True,
        "OPENFACTORY_COMMAND_MAX_AGE": 300.0,
        "OPENFACTORY_COMMAND_TIMEOUT": 60.0,
        "OPENFACTORY_COMMAND_CONCURRENCY": 1,
        "OPENFACTORY_DEDUPE_SIZE": 100_000,  # answered calls remembered (within the max age) at most
        "OPENFACTORY_CALL_WAIT": 20.0,  # an HTTP method call waits this long for its result, then 504
        "OPENFACTORY_READ_TIMEOUT": 5.0,  # a read waits this long for the log's end, then 503
        "OPENFACTORY_COMMAND_SECRET": None,  # None: commands are not signed nor checked
        "OPENFACTORY_ALLOWED_SENDERS": None,  # None: any sender
        "OPENFACTORY_PUBLISH_TIMEOUT": 5.0,
        "OPENFACTORY_MAX_PENDING": 100_000,
        "OPENFACTORY_MAX_PENDING_BYTES": 64 * 1024 * 1024,  # outgoing bytes held while the broker is away
        "OPENFACTORY_MAX_ARGUMENTS": DEFAULT_MAX_ARGUMENTS,  # per command or HTTP call
        "OPENFACTORY_MAX_COMMAND_BYTES": DEFAULT_MAX_COMMAND_BYTES,  # a command's serialized arguments
        "OPENFACTORY_STOP_TIMEOUT": 10.0,
        "OPENFACTORY_START_ON_REQUEST": True,
        "OPENFACTORY_URL_PREFIX": "/ofa",
        "OPENFACTORY_ROOT_PATH": env.get("OPENFACTORY_ROOT_PATH") or None,
        "OPENFACTORY_PROXY_FIX": True,
        "OPENFACTORY_API_TOKENS": None,  # None: method routes open; else bearer tokens (never shown)
        "OPENFACTORY_PROTECT_READ_ROUTES": False,  # True: read routes need a token too (not /health)
        "OPENFACTORY_AUTHORIZE": None,  # the host app's own check, see flask_openfactory.auth
        "OPENFACTORY_LOG_LEVEL": "INFO",
        "OPENFACTORY_STORAGE": env.get("STORAGE") or None,  # JSON name -> storage (flask_openfactory.runtime.storage)
        "OPENFACTORY_REGISTER_METRICS": True,  # with the platform's Prometheus registry, when it runs one
        "OPENFACTORY_METRICS_PORT": env.get("PORT") or 4000,  # the port Prometheus scrapes
        "OPENFACTORY_LOG_FORMAT": env.get("OPENFACTORY_LOG_FORMAT") or "text",
        "OPENFACTORY_APPLICATION_VERSION": env.get("APPLICATION_VERSION") or "latest",
        "OPENFACTORY_APPLICATION_MANUFACTURER": env.get("APPLICATION_MANUFACTURER") or "OpenFactoryIO",
        "OPENFACTORY_APPLICATION_LICENSE": env.get("APPLICATION_LICENSE")
        or "Polyform Noncommercial License 1.0.0",
    }


def apply_defaults(config: dict[str, Any], instance_path: str) -> None:
    for key, value in defaults(instance_path).items():
        config.setdefault(key, value)


def _number(kind: type, minimum: float) -> Callable[[str, Any], Any]:
    def parse(key: str, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = kind(value.strip())
            except ValueError:
                raise ConfigurationError(f"{key} must be a {kind.__name__}, got {value!r}") from None
        wrong_kind = kind is int and not isinstance(value, int)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or wrong_kind:
            raise ConfigurationError(f"{key} must be a {kind.__name__}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigurationError(f"{key} must be a finite number, got {value!r}")
        if value < minimum:
            raise ConfigurationError(f"{key} must be at least {minimum:g}, got {value!r}")
        return kind(value)

    return parse


def _flag(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise ConfigurationError(f"{key} must be true or false, got {value!r}")


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{key} must be a non-empty string, got {value!r}")
    return value.strip()


def _optional_text(key: str, value: Any) -> str | None:
    return None if value in (None, "") else _text(key, value)


def _mapping(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{key} must be a dict of librdkafka settings, got {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _election(key: str, value: Any) -> str:
    if value not in ("lock", "group"):
        raise ConfigurationError(
            f"{key} must be 'lock' (one host per asset, instant takeover) or 'group' "
            f"(several hosts share the asset UUID), got {value!r}"
        )
    return str(value)


def _log_format(key: str, value: Any) -> str:
    if value not in ("text", "json"):
        raise ConfigurationError(f"{key} must be 'text' or 'json' (one JSON object per line), got {value!r}")
    return str(value)


def log_format(config: Mapping[str, Any]) -> str:
    return str(read(config, "OPENFACTORY_LOG_FORMAT", _log_format))


def _url_prefix(key: str, value: Any) -> str:
    text = _text(key, value)
    if not text.startswith("/") or text.endswith("/") and text != "/":
        raise ConfigurationError(f"{key} must start with '/' and not end with '/', got {value!r}")
    return "" if text == "/" else text


def _secret(key: str, value: Any) -> SigningKeys | None:
    """A secret string, or a list of them (the first signs, any verifies); errors never quote it."""
    if value is None or value == "" or value == [] or value == ():
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigurationError(f"{key} must be a string or a list of strings, got {type(value).__name__}")
    for index, item in enumerate(items):
        where = key if isinstance(value, str) else f"{key}[{index}]"
        if not isinstance(item, str):
            raise ConfigurationError(f"{where} must be a string, got {type(item).__name__} (quote it)")
        if item != item.strip():
            raise ConfigurationError(f"{where} has leading or trailing white space (a stray newline?)")
        if len(item) < MIN_SECRET_LENGTH:
            raise ConfigurationError(
                f"{where} must be at least {MIN_SECRET_LENGTH} characters, got {len(item)} "
                "(e.g. python -c 'import secrets; print(secrets.token_hex(32))')"
            )
    return SigningKeys(items)


def _senders(key: str, value: Any) -> frozenset[str] | None:
    """None (anyone), a list of sender UUIDs, or one comma-separated string of them."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise ConfigurationError(f"{key} must be None or a list of sender UUIDs, got {type(value).__name__}")
    senders = set()
    for item in items:
        if not isinstance(item, str) or not item.strip():
            if isinstance(value, str):
                continue  # "A, B," from an environment variable
            raise ConfigurationError(f"{key} entries must be non-empty strings, got {item!r}")
        senders.add(item.strip())
    return frozenset(senders)


_T = TypeVar("_T")


def read(config: Mapping[str, Any], key: str, parse: Callable[[str, Any], _T]) -> _T:
    try:
        return parse(key, config[key])
    except ConfigurationError:
        raise
    except (ValueError, OverflowError) as exc:
        # e.g. float(10**400), or a 5000-digit int that even repr() refuses: still the key's fault
        raise ConfigurationError(f"{key} has an unusable value ({type(exc).__name__}: {exc})") from None


def uuid_conflict(config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> str | None:
    """A warning when the app's own UUID differs from the one the platform deployed it under."""
    env = os.environ if environ is None else environ
    own = config.get("OPENFACTORY_APP_UUID")
    if not own or not env.get("APP_UUID"):
        return None
    platform = platform_uuid(env)
    if own == platform:
        return None
    return (f"OPENFACTORY_APP_UUID is {own!r} but the platform deployed this app as {platform!r} "
            "(APP_UUID): other assets address the platform's UUID; remove the setting to use it")


def runtime_settings(config: Mapping[str, Any]) -> RuntimeSettings:
    """Validated runtime settings from ``app.config``; ConfigurationError names the key.

    A transport URL that can never work (no broker in it, a database path that
    cannot be created) fails here, at boot, rather than on every call later.
    """
    uuid = config["OPENFACTORY_APP_UUID"] or platform_uuid(os.environ)
    try:
        validate_identifier("asset UUID", uuid)
    except ValueError as exc:
        raise ConfigurationError(f"OPENFACTORY_APP_UUID: {exc}") from None
    url = read(config, "OPENFACTORY_TRANSPORT_URL", _text)
    try:
        check_url(url)
    except ConfigurationError as exc:
        raise ConfigurationError(f"OPENFACTORY_TRANSPORT_URL: {exc}") from None
    read(config, "OPENFACTORY_LOG_FORMAT", _log_format)
    options = TransportOptions(
        publish_timeout=read(config, "OPENFACTORY_PUBLISH_TIMEOUT", _number(float, 0)),
        max_pending=read(config, "OPENFACTORY_MAX_PENDING", _number(int, 1)),
        max_pending_bytes=read(config, "OPENFACTORY_MAX_PENDING_BYTES", _number(int, 1024)),
        kafka_config=read(config, "OPENFACTORY_KAFKA_CONFIG", _mapping),
        ksqldb_url=read(config, "OPENFACTORY_KSQLDB_URL", _optional_text),
        topic=read(config, "OPENFACTORY_ASSETS_TOPIC", _optional_text),
        election=read(config, "OPENFACTORY_KAFKA_ELECTION", _election),
        lock_dir=read(config, "OPENFACTORY_LOCK_DIR", _optional_text),
    )
    return RuntimeSettings(
        asset_uuid=uuid,
        transport_url=url,
        transport_options=options,
        consumer_group=read(config, "OPENFACTORY_CONSUMER_GROUP", _optional_text),
        execute_commands=read(config, "OPENFACTORY_EXECUTE_COMMANDS", _flag),
        command_max_age=read(config, "OPENFACTORY_COMMAND_MAX_AGE", _number(float, 0)),
        command_timeout=read(config, "OPENFACTORY_COMMAND_TIMEOUT", _number(float, 0.001)),
        command_concurrency=read(config, "OPENFACTORY_COMMAND_CONCURRENCY", _number(int, 1)),
        dedupe_size=read(config, "OPENFACTORY_DEDUPE_SIZE", _number(int, 1)),
        stop_timeout=read(config, "OPENFACTORY_STOP_TIMEOUT", _number(float, 0)),
        call_wait=read(config, "OPENFACTORY_CALL_WAIT", _number(float, 0)),
        read_timeout=read(config, "OPENFACTORY_READ_TIMEOUT", _number(float, 0.001)),
        application_version=read(config, "OPENFACTORY_APPLICATION_VERSION", _text),
        application_manufacturer=read(config, "OPENFACTORY_APPLICATION_MANUFACTURER", _text),
        application_license=read(config, "OPENFACTORY_APPLICATION_LICENSE", _text),
        command_secret=read(config, "OPENFACTORY_COMMAND_SECRET", _secret),
        allowed_senders=read(config, "OPENFACTORY_ALLOWED_SENDERS", _senders),
        argument_limits=argument_limits(config),
        storage=read(config, "OPENFACTORY_STORAGE", _storage),
        metrics_target=MetricsTarget(read(config, "OPENFACTORY_METRICS_PORT", _number(int, 1)),
                                     f"{url_prefix(config).rstrip('/')}/metrics")
        if flag(config, "OPENFACTORY_REGISTER_METRICS") else None,
    )


def _storage(key: str, value: Any) -> Any:
    try:
        return parse_storage(value)
    except StorageConfigError as exc:
        raise ConfigurationError(f"{key}: {exc}") from None


def argument_limits(config: Mapping[str, Any]) -> ArgumentLimits:
    """Bounds on one call's arguments (commands and the HTTP method routes)."""
    return ArgumentLimits(
        max_arguments=read(config, "OPENFACTORY_MAX_ARGUMENTS", _number(int, 0)),
        max_bytes=read(config, "OPENFACTORY_MAX_COMMAND_BYTES", _number(int, 2)),  # "{}" is 2 bytes
    )


def flag(config: Mapping[str, Any], key: str) -> bool:
    return bool(read(config, key, _flag))


def url_prefix(config: Mapping[str, Any]) -> str:
    return str(read(config, "OPENFACTORY_URL_PREFIX", _url_prefix))


def root_path(config: Mapping[str, Any]) -> str | None:
    value = read(config, "OPENFACTORY_ROOT_PATH", _optional_text)
    if value is not None and not value.startswith("/"):
        raise ConfigurationError(f"OPENFACTORY_ROOT_PATH must start with '/', got {value!r}")
    return value


# Bearer tokens are RFC 6750 "token68": anything else could never be sent in the header.
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
MIN_TOKEN_LENGTH = 16  # a short token is guessed by trying


def _tokens(key: str, value: Any) -> tuple[str, ...] | None:
    """None (open), a list of tokens, or one comma-separated string of them; errors never quote one."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise ConfigurationError(f"{key} must be None or a list of bearer tokens, got {type(value).__name__}")
    tokens: list[str] = []
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise ConfigurationError(f"{key}[{index}] must be a string, got {type(item).__name__}")
        token = item.strip()
        if not token and isinstance(value, str):
            continue  # "a, b," from an environment variable
        if not _TOKEN68.fullmatch(token) or len(token) < MIN_TOKEN_LENGTH:
            raise ConfigurationError(
                f"{key}[{index}] is not a usable bearer token: at least {MIN_TOKEN_LENGTH} letters, digits "
                "or -._~+/ with optional trailing '=' "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        tokens.append(token)
    if not tokens:
        raise ConfigurationError(f"{key} lists no token; use None to leave the method routes open")
    return tuple(dict.fromkeys(tokens))


def _callable(key: str, value: Any) -> Callable[..., Any] | None:
    """A callable, or "package.module:name" / "package.module.name" naming one."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = import_string(value)
        except ImportError as exc:
            raise ConfigurationError(f"{key}: cannot import {value!r}: {exc}") from None
    if not callable(value):
        raise ConfigurationError(f"{key} must be a callable or an import string naming one, got {value!r}")
    return value  # type: ignore[no-any-return]  # callable, checked above


def api_tokens(config: Mapping[str, Any]) -> tuple[str, ...] | None:
    return read(config, "OPENFACTORY_API_TOKENS", _tokens)


def authorize_hook(config: Mapping[str, Any]) -> Callable[..., Any] | None:
    return read(config, "OPENFACTORY_AUTHORIZE", _callable)
