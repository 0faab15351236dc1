"""The daemon configuration (ARCHITECTURE.md §4): a versioned TOML file, validated when loaded.

Loading happens in two steps. Pydantic checks the shape of the file (types, formats, unknown
keys); then the files it names are read — password files, replication configurations and
registry policies — and checks spanning the whole file are made (every rule destination names a
configured registry, no two registries share a location). Every problem found is reported at
once, each naming the file and the dotted field path.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
)

from replicator.domain.policy import RegistryPolicy, parse_policy
from replicator.domain.rules import (
    ACCOUNT_RE,
    REGION_RE,
    Destination,
    ReplicationConfig,
    parse_replication_config,
)
from replicator.errors import ConfigError

SUPPORTED_VERSION = 1
ENV_VAR = "REPLICATOR_CONFIG"
DEFAULT_PATH = Path("/etc/replicator/replicator.toml")
DEFAULT_JOURNAL_URL = "sqlite:////var/lib/replicator/journal.db"
MIB = 1024 * 1024
# Blobs up to 64 MiB go up in one streamed PUT: one round trip, and most layers are smaller.
# Above it, chunked PATCHes keep a dropped connection from wasting the whole upload and stay
# under the request-body caps of the proxies commonly put in front of registries.
DEFAULT_CHUNK_THRESHOLD = 64 * MIB
# Below 5 MiB, S3-backed registries refuse non-final chunks (S3's multipart minimum).
MIN_CHUNK_THRESHOLD = 5 * MIB
# Registry names appear as one MQTT topic level and in metrics labels.
_NAME_RE = re.compile(r"^[a-z0-9_-]+$")
_UNSET_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
_SQLITE_PREFIX = "sqlite:///"


def _resolve_path(value: object, info: ValidationInfo) -> Path:
    """Expand `$VAR` and `~`, and resolve a relative path against the config file's folder."""
    if not isinstance(value, str) or not value:
        raise ValueError("must be a path (a non-empty string)")
    expanded = os.path.expanduser(os.path.expandvars(value))
    unset = _UNSET_VAR.search(expanded)
    if unset:
        raise ValueError(f"environment variable {unset.group(1)} in {value!r} is not set")
    base = Path((info.context or {}).get("base_dir", "."))
    return base / expanded


def _resolve_journal_url(url: str, info: ValidationInfo) -> str:
    if "://" not in url:
        raise ValueError(f"{url!r} is not a database URL (like sqlite:////var/lib/x.db)")
    path = url.removeprefix(_SQLITE_PREFIX)
    if not url.startswith(_SQLITE_PREFIX) or path.startswith("/") or path in ("", ":memory:"):
        return url
    base = Path((info.context or {}).get("base_dir", "."))
    return f"{_SQLITE_PREFIX}{base / path}"


def _matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    """A validator refusing strings that do not match `pattern`; `what` completes "... is not"."""

    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"{value!r} is not {what}")
        return value

    return AfterValidator(check)


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not http(s)://host[:port]")
    if parts.username or parts.password:
        raise ValueError("credentials do not belong in the url; use username and password_file")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{value!r} has a path; give only http(s)://host[:port]")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"{value!r} has an invalid port") from exc
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _check_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port")
    return value


def _check_topic_level(value: str) -> str:
    if any(ch in value for ch in "/+#"):
        raise ValueError(f"{value!r} must not contain '/', '+' or '#'")
    return value


ConfigPath = Annotated[Path, BeforeValidator(_resolve_path)]
Account = Annotated[str, _matching(ACCOUNT_RE, "an account: exactly 12 digits, as a string")]
Region = Annotated[str, _matching(REGION_RE, "a region (like us-east-1)")]
RegistryUrl = Annotated[str, AfterValidator(_check_url)]
RegistryName = Annotated[
    str, _matching(_NAME_RE, "a registry name ([a-z0-9_-]+, an MQTT topic level)")
]
Listen = Annotated[str, AfterValidator(_check_listen)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Listener(_Section):
    listen: Listen

    @property
    def host(self) -> str:
        """The address part of `listen`, without IPv6 brackets."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The port part of `listen`."""
        return int(self.listen.rpartition(":")[2])


class JournalConfig(_Section):
    """[journal]: any SQLAlchemy URL; a relative SQLite path is relative to the config file."""

    url: Annotated[str, AfterValidator(_resolve_journal_url)] = DEFAULT_JOURNAL_URL


class MqttConfig(_Section):
    """[mqtt]: the broker, topics, and credentials (password only from a file)."""

    host: str = "127.0.0.1"
    port: Port = 1883
    client_id: Annotated[str, Field(min_length=1)] = "replicator-1"
    events_topic: str = "registry/+/events"
    results_topic: str = "replicator/{registry}/replications"
    shared_group: Annotated[str, AfterValidator(_check_topic_level)] = ""
    username: str | None = None
    password_file: ConfigPath | None = None
    tls: bool = False
    ca_file: ConfigPath | None = None
    client_cert: ConfigPath | None = None
    client_key: ConfigPath | None = None
    keepalive: Annotated[int, Field(ge=0)] = 30
    _password: SecretStr | None = PrivateAttr(default=None)

    @property
    def password(self) -> SecretStr | None:
        """The broker password read from `password_file`."""
        return self._password


class WorkersConfig(_Section):
    """[workers]: concurrency limits, attempts, shutdown grace and the chunked-upload threshold."""

    concurrency: Annotated[int, Field(ge=1)] = 16
    per_registry: Annotated[int, Field(ge=1)] = 8
    max_attempts: Annotated[int, Field(ge=1)] = 10
    grace_period: Annotated[float, Field(ge=0)] = 30.0
    chunk_threshold: Annotated[int, Field(ge=MIN_CHUNK_THRESHOLD)] = DEFAULT_CHUNK_THRESHOLD


class HttpConfig(_Listener):
    """[http]: where /healthz, /readyz, /metrics and the status API listen."""

    listen: Listen = "127.0.0.1:9478"


class BridgeConfig(_Listener):
    """[bridge]: the registry-webhook receiver; an optional bearer token read from a file."""

    listen: Listen = "127.0.0.1:9479"
    token_file: ConfigPath | None = None
    _token: SecretStr | None = PrivateAttr(default=None)

    @property
    def token(self) -> SecretStr | None:
        """The bearer token webhooks must present, read from `token_file`."""
        return self._token


class ReconcileConfig(_Section):
    """[reconcile]: seconds between drift reconciliations; 0 turns it off."""

    interval: Annotated[float, Field(ge=0)] = 0


class RegistryConfig(_Section):
    """[registries.<name>]: one registry, its location, credentials, rules and policy."""

    account: Account
    region: Region
    url: RegistryUrl
    replication_file: ConfigPath | None = Field(None, alias="replication")
    policy_file: ConfigPath | None = Field(None, alias="policy")
    username: str | None = None
    password_file: ConfigPath | None = None
    docker_config: ConfigPath | None = None
    ca_file: ConfigPath | None = None
    tls_verify: bool = True
    client_cert: ConfigPath | None = None
    client_key: ConfigPath | None = None
    _name: str = PrivateAttr(default="")
    _replication: ReplicationConfig = PrivateAttr(default_factory=ReplicationConfig)
    _policy: RegistryPolicy | None = PrivateAttr(default=None)
    _password: SecretStr | None = PrivateAttr(default=None)

    @property
    def name(self) -> str:
        """The key under [registries]."""
        return self._name

    @property
    def host(self) -> str:
        """`host[:port]` of the url, without a default port (80 for http, 443 for https)."""
        scheme, _, netloc = self.url.partition("://")
        return netloc.removesuffix(":443" if scheme == "https" else ":80")

    @property
    def location(self) -> Destination:
        """Where this registry is, as replication rules name it."""
        return Destination(region=self.region, registry_id=self.account)

    @property
    def replication(self) -> ReplicationConfig:
        """The rules from `replication` (no rules when the registry is only a destination)."""
        return self._replication

    @property
    def policy(self) -> RegistryPolicy | None:
        """The registry policy from `policy`, or None."""
        return self._policy

    @property
    def password(self) -> SecretStr | None:
        """The password read from `password_file`."""
        return self._password


class Config(_Section):
    """The whole file; `load_config` fills in what is read from the files it names."""

    version: int = SUPPORTED_VERSION
    journal: JournalConfig = Field(default_factory=JournalConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    bridge: BridgeConfig = Field(default_factory=BridgeConfig)
    reconcile: ReconcileConfig = Field(default_factory=ReconcileConfig)
    registries: dict[RegistryName, RegistryConfig] = Field(min_length=1)
    _path: Path = PrivateAttr(default=DEFAULT_PATH)

    @property
    def path(self) -> Path:
        """The file this configuration was loaded from."""
        return self._path

    def registry_by_location(self, account: str, region: str) -> RegistryConfig | None:
        """The registry with this account and region, if configured."""
        for registry in self.registries.values():
            if registry.account == account and registry.region == region:
                return registry
        return None

    def registry_by_destination(self, destination: Destination) -> RegistryConfig | None:
        """The registry a replication rule's destination names, if configured."""
        return self.registry_by_location(destination.registry_id, destination.region)

    def registry_by_host(self, host: str) -> RegistryConfig | None:
        """The registry serving `host[:port]` (default ports optional), if configured."""
        wanted = host.lower()
        for registry in self.registries.values():
            if wanted in (registry.host, f"{registry.host}:443", f"{registry.host}:80"):
                return registry
        return None


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
        raise ConfigError(f"cannot read the config file: {exc.strerror}", file=name) from exc
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
    _check_credentials(config.mqtt, "mqtt", problems)
    for key, registry in config.registries.items():
        _load_registry(key, registry, problems)
    if not problems:
        _check_across(config, problems)
    if problems:
        raise _as_config_error(problems, name)
    return config


def _load_registry(key: str, registry: RegistryConfig, problems: list[tuple[str, str]]) -> None:
    where = f"registries.{key}"
    registry._name = key
    registry._password = _read_secret(registry.password_file, f"{where}.password_file", problems)
    _check_credentials(registry, where, problems)
    if registry.username and registry.docker_config:
        problems.append((f"{where}.docker_config", "give either username or docker_config"))
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
        return field, "unknown key"
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
