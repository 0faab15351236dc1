"""The daemon configuration (ARCHITECTURE.md §4): a versioned TOML file, validated when loaded.

Loading happens in two steps. Pydantic checks the shape of the file (types, formats, unknown
keys; the models are in `model`, `registries` and `bridge`); then the files it names are read —
password files, replication configurations and registry policies — and checks spanning the
whole file are made (every rule destination names a configured registry, no two registries
share a location). Every problem found is reported at once, each naming the file and the dotted
field path.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from replicator.config.bridge import BridgeConfig, BridgeSourceConfig, WebhookAuth
from replicator.config.model import (
    DEFAULT_JOURNAL_URL,
    DEFAULT_PATH,
    ENV_VAR,
    MIN_CHUNK_THRESHOLD,
    SUPPORTED_VERSION,
    Config,
    HttpConfig,
    JournalConfig,
    MqttConfig,
    ReconcileConfig,
    WorkersConfig,
)
from replicator.config.registries import RegistryConfig
from replicator.config.suggestions import did_you_mean
from replicator.domain.images.refs import is_loopback_host
from replicator.domain.routing.policy import parse_policy
from replicator.domain.routing.rules import Destination, parse_replication_config
from replicator.errors import ConfigError
from replicator.registry.blobs import DEFAULT_CHUNK_THRESHOLD
from replicator.registry.dockerconfig import inspect
from replicator.registry.ecr import ecr_location

__all__ = [
    "DEFAULT_CHUNK_THRESHOLD",
    "DEFAULT_JOURNAL_URL",
    "DEFAULT_PATH",
    "MIN_CHUNK_THRESHOLD",
    "SUPPORTED_VERSION",
    "BridgeConfig",
    "BridgeSourceConfig",
    "Config",
    "HttpConfig",
    "JournalConfig",
    "MqttConfig",
    "ReconcileConfig",
    "RegistryConfig",
    "WebhookAuth",
    "WorkersConfig",
    "default_path",
    "load_config",
]


def default_path() -> Path:
    """$REPLICATOR_CONFIG, else /etc/replicator/replicator.toml."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT_PATH)


def load_config(path: str | Path | None = None) -> Config:
    """Read, validate and resolve the configuration; raise ConfigError naming file and field."""
    file = Path(path) if path is not None else default_path()
    name = str(file)
    try:
        doc = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        if path is not None:
            how = "as given"
        elif os.environ.get(ENV_VAR):
            how = f"from ${ENV_VAR}"
        else:
            how = f"the default: no --config, ${ENV_VAR} unset"
        raise ConfigError(
            f"cannot read the config file ({how}): {exc.strerror}; give a readable file with "
            f"--config FILE or ${ENV_VAR} (the repository's configs/demo.toml is an example), "
            "and check it with `replicator config check FILE`",
            file=name,
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason}", file=name) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", file=name) from exc
    version = doc.get("version", SUPPORTED_VERSION)
    if isinstance(version, int) and version > SUPPORTED_VERSION:
        raise ConfigError(
            f"{version} is newer than this replicator supports ({SUPPORTED_VERSION}); "
            "upgrade replicator or rewrite the file for version 1",
            file=name,
            field="version",
        )
    base_dir = file.resolve().parent
    try:
        config = Config.model_validate(doc, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise _as_config_error([_pydantic_problem(e) for e in exc.errors()], name) from exc
    problems: list[tuple[str, str]] = []
    if config.version != SUPPORTED_VERSION:
        problems.append(("version", f"{config.version} is not a supported version (1)"))
    config._path = file
    config.mqtt._password = _read_secret(config.mqtt.password_file, "mqtt.password_file", problems)
    config.bridge._token = _read_secret(config.bridge.token_file, "bridge.token_file", problems)
    _load_bridge(config, problems)
    _check_credentials(config.mqtt, "mqtt", problems)
    for key, registry in config.registries.items():
        _load_registry(key, registry, problems)
    if not problems:
        _check_across(config, problems)
    if problems:
        raise _as_config_error(problems, name)
    return config


def _load_bridge(config: Config, problems: list[tuple[str, str]]) -> None:
    """Read the per-source secrets and keys; check TLS files and that every source is
    authenticated unless the bridge listens on loopback only."""
    bridge = config.bridge
    if bool(bridge.tls_cert) != bool(bridge.tls_key):
        problems.append(("bridge.tls_cert", "tls_cert and tls_key go together"))
    if bridge.client_ca and not bridge.tls_cert:
        problems.append(("bridge.client_ca", "client certificates need TLS: set tls_cert, tls_key"))
    for name in ("tls_cert", "tls_key", "client_ca"):
        path = getattr(bridge, name)
        if path is not None and not path.is_file():
            problems.append((f"bridge.{name}", f"{path} is not a readable file"))
    for key, source in bridge.sources.items():
        where = f"bridge.sources.{key}"
        if key not in config.registries:
            problems.append((where, f"{key} is not a registry of this config"))
        source._secret = _read_secret(source.secret_file, f"{where}.secret_file", problems)
        source._keys = (
            _read_text(source.keys_file, f"{where}.keys_file", problems)
            if (source.keys_file)
            else None
        )
        for field, why in webhook_auth_problems(source):
            problems.append((f"{where}.{field}", why))
    exposed = not is_loopback_host(bridge.listen.rpartition(":")[0])
    if exposed:
        for key in sorted(unauthenticated_sources(config)):
            problems.append(
                (f"bridge.sources.{key}",
                 f"webhooks of {key} would be accepted without authentication on "
                 f"{bridge.listen}; set its auth (or bridge.token_file), or listen on loopback")
            )  # fmt: skip


def unauthenticated_sources(config: Config) -> list[str]:
    """The registries whose webhooks the bridge takes without any authentication."""
    if config.bridge.token_file is not None:
        return [k for k, s in config.bridge.sources.items() if s.auth is WebhookAuth.NONE]
    return [
        key
        for key in config.registries
        if key not in config.bridge.sources or config.bridge.sources[key].auth is WebhookAuth.NONE
    ]


def webhook_auth_problems(source: BridgeSourceConfig) -> list[tuple[str, str]]:
    """What a source's auth method lacks: (field, why) pairs."""
    problems: list[tuple[str, str]] = []
    needs_secret = source.auth not in (WebhookAuth.NONE, WebhookAuth.GOOGLE_OIDC)
    if needs_secret and source.secret_file is None:
        problems.append(("secret_file", f"auth {source.auth.value} needs a secret_file"))
    if source.auth is WebhookAuth.BASIC and not source.username:
        problems.append(("username", "auth basic needs a username"))
    if source.auth is WebhookAuth.GOOGLE_OIDC:
        if source.keys_file is None:
            problems.append(("keys_file", "auth google-oidc needs keys_file (JWKS or PEM)"))
        if not source.audience:
            problems.append(("audience", "auth google-oidc needs the subscription's audience"))
    return problems


def _load_registry(key: str, registry: RegistryConfig, problems: list[tuple[str, str]]) -> None:
    where = f"registries.{key}"
    registry._name = key
    registry._password = _read_secret(registry.password_file, f"{where}.password_file", problems)
    _check_credentials(registry, where, problems)
    if registry.auth == "ecr":
        _check_ecr(registry, where, problems)
    elif registry.ecr_endpoint is not None:
        problems.append((f"{where}.ecr_endpoint", 'is set without auth = "ecr"'))
    if registry.username and registry.docker_config:
        problems.append((f"{where}.docker_config", "give either username or docker_config"))
    elif registry.docker_config is not None and registry.docker_config.is_file():
        _check_docker_config(registry, f"{where}.docker_config", problems)
    replication = _read_json(registry.replication_file, f"{where}.replication", problems)
    if replication is not None:
        try:
            registry._replication = parse_replication_config(replication)
        except ConfigError as exc:
            problems.append(_nested(exc, f"{where}.replication", registry.replication_file))
    policy = _read_json(registry.policy_file, f"{where}.policy", problems)
    if policy is not None:
        try:
            registry._policy = parse_policy(policy)
        except ConfigError as exc:
            problems.append(_nested(exc, f"{where}.policy", registry.policy_file))


def _check_ecr(registry: RegistryConfig, where: str, problems: list[tuple[str, str]]) -> None:
    """ECR tokens replace every other credential; an ECR URL names the account and region."""
    for name in ("username", "password_file", "docker_config"):
        if getattr(registry, name) is not None:
            problems.append((f"{where}.{name}", 'is set with auth = "ecr", which gets tokens'))
    found = ecr_location(registry.host)
    if found is not None and found != (registry.account, registry.region):
        problems.append(
            (f"{where}.url", f"names ECR account {found[0]} in {found[1]}, not the "
             f"registry's account {registry.account} in {registry.region}")
        )  # fmt: skip


def _check_docker_config(
    registry: RegistryConfig, field: str, problems: list[tuple[str, str]]
) -> None:
    """The file is JSON that says something for this registry: inline credentials, or a
    credential helper (asked at run time; `config check` says whether it is on PATH)."""
    assert registry.docker_config is not None
    try:
        found = inspect(registry.docker_config, registry.host)
    except ConfigError as exc:
        problems.append((field, str(exc)))
        return
    if found is None:
        problems.append(
            (field, f"{registry.docker_config} has no credentials for {registry.host}: no "
             "auths entry with credentials, no credHelpers entry and no credsStore")
        )  # fmt: skip


def _check_across(config: Config, problems: list[tuple[str, str]]) -> None:
    seen_locations: dict[Destination, str] = {}
    seen_hosts: dict[str, str] = {}
    for key, registry in config.registries.items():
        other = seen_locations.setdefault(registry.location, key)
        if other != key:
            problems.append(
                (f"registries.{key}", f"has the same account and region as registries.{other}")
            )
        other = seen_hosts.setdefault(registry.host, key)
        if other != key:
            problems.append((f"registries.{key}.url", f"same host as registries.{other}"))
    for key, registry in config.registries.items():
        for r, rule in enumerate(registry.replication.rules):
            for d, destination in enumerate(rule.destinations):
                field = f"registries.{key}.replication: rules[{r}].destinations[{d}]"
                found = config.registry_by_destination(destination)
                if found is None:
                    problems.append(
                        (field, f"{_named(destination)} names no registry of this config "
                         f"(in {registry.replication_file})")
                    )  # fmt: skip
                elif found is registry:
                    problems.append(
                        (field, f"{_named(destination)} is the source registry {key} itself")
                    )


def _named(destination: Destination) -> str:
    return f"registryId {destination.registry_id} region {destination.region}"


def _check_credentials(
    section: MqttConfig | RegistryConfig, where: str, problems: list[tuple[str, str]]
) -> None:
    """A password file needs a user name, a client certificate its key; named files exist."""
    if section.password_file and not section.username:
        problems.append((f"{where}.password_file", "is set without username"))
    if bool(section.client_cert) != bool(section.client_key):
        problems.append((f"{where}.client_cert", "client_cert and client_key go together"))
    for name in ("docker_config", "ca_file", "client_cert", "client_key"):
        path = getattr(section, name, None)
        if path is not None and not path.is_file():
            problems.append((f"{where}.{name}", f"{path} is not a readable file"))


def _read_text(path: Path, field: str, problems: list[tuple[str, str]]) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problems.append((field, f"cannot read {path}: {why}"))
        return None


def _read_secret(
    path: Path | None, field: str, problems: list[tuple[str, str]]
) -> SecretStr | None:
    text = None if path is None else _read_text(path, field, problems)
    if text is None:
        return None
    if not text.rstrip("\r\n"):
        problems.append((field, f"{path} is empty"))
        return None
    return SecretStr(text.rstrip("\r\n"))


def _read_json(path: Path | None, field: str, problems: list[tuple[str, str]]) -> object:
    text = None if path is None else _read_text(path, field, problems)
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append((field, f"{path} is not valid JSON: {exc}"))
        return None


def _nested(exc: ConfigError, field: str, file: Path | None) -> tuple[str, str]:
    message = exc.message.removeprefix(f"{exc.field}: ") if exc.field else exc.message
    inner = f"{field}: {exc.field}" if exc.field else field
    return inner, f"{message} (in {file})"


def _pydantic_problem(error: Any) -> tuple[str, str]:
    """One pydantic error as (dotted field path, message); input values are never echoed."""
    parts: list[str] = []
    for item in error["loc"]:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item != "[key]":
            parts.append(f".{item}" if parts else str(item))
    field = "".join(parts)
    kind = error["type"]
    if kind == "extra_forbidden":
        return field, "unknown key" + did_you_mean(Config, error["loc"])
    if kind == "missing":
        return field, "is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "string_type" and isinstance(error["input"], int | float):
        return field, "must be a string in quotes, not a number"
    if kind.endswith("_type") or kind == "is_instance_of":
        message += f", not {type(error['input']).__name__}"
    return field, message


def _as_config_error(problems: list[tuple[str, str]], file: str) -> ConfigError:
    if len(problems) == 1:
        field, message = problems[0]
        return ConfigError(message, file=file, field=field or None)
    lines = "\n".join(f"  {field}: {message}" for field, message in problems)
    return ConfigError(f"{len(problems)} errors:\n{lines}", file=file)
