"""The shape of the daemon configuration (ARCHITECTURE.md §4): pydantic models and their checks.

`replicator.config.loading` loads a file into these models; import them from there.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    model_validator,
)

from replicator.domain.policy import RegistryPolicy
from replicator.domain.refs import validate_repository
from replicator.domain.rules import (
    ACCOUNT_RE,
    REGION_RE,
    Destination,
    ReplicationConfig,
)
from replicator.domain.webhooks import WebhookFormat
from replicator.errors import InvalidReferenceError
from replicator.registry.blobs import DEFAULT_CHUNK_THRESHOLD, DEFAULT_CONCURRENCY
from replicator.registry.client import DEFAULT_MAX_IN_FLIGHT
from replicator.registry.ecr import ecr_location
from replicator.registry.http.proxy import DIRECT, ProxyUrlError, parse_proxy_url

SUPPORTED_VERSION = 1
ENV_VAR = "REPLICATOR_CONFIG"
DEFAULT_PATH = Path("/etc/replicator/replicator.toml")
DEFAULT_JOURNAL_URL = "sqlite:////var/lib/replicator/journal.db"
# Events and finished jobs are kept this long: a month of history for `status` and `jobs`, far
# longer than any redelivery, while the journal stays flat in size.
DEFAULT_RETENTION_DAYS = 30.0
# A job in flight at this many process deaths in a row is set aside (PROCESS_DIED): twice the
# attempts a job's own failures get, since most deaths have another cause; a job that kills the
# process still stops a crash loop after a few minutes of restarts.
DEFAULT_MAX_DEATHS = 20
MIB = 1024 * 1024
# Below 5 MiB, S3-backed registries refuse non-final chunks (S3's multipart minimum).
MIN_CHUNK_THRESHOLD = 5 * MIB
# A job claimed longer ago than this by a process of another host is taken for an orphan of a
# dead peer: far beyond the copy of any real image on a LAN, short enough to repair within
# minutes. (A dead process of this host is known dead at once: claimers.py.)
DEFAULT_ORPHAN_AFTER = 600.0
# Below a second even a live peer's smallest copy would be taken from it and run twice.
MIN_ORPHAN_AFTER = 1.0
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


def _check_realm_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL of a token service")
    if parts.username or parts.password:
        raise ValueError(f"{value!r}: credentials do not belong in a token realm URL")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"{value!r} has an invalid port") from exc
    return value


def _check_proxy(value: str) -> str:
    if value.strip().lower() == DIRECT:
        return DIRECT
    try:
        parse_proxy_url(value)
    except ProxyUrlError as exc:
        raise ValueError(f'{exc} (or "{DIRECT}" to connect directly)') from exc
    return value


def _check_repository(value: str) -> str:
    try:
        return validate_repository(value)
    except InvalidReferenceError as exc:
        raise ValueError(str(exc)) from exc


def _check_endpoint(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s):// URL")
    return value


def _check_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port")
    return value


def _check_topic_level(value: str) -> str:
    if any(ch in value for ch in "/+#"):
        raise ValueError(f"{value!r} must not contain '/', '+' or '#'")
    return value


def _check_format(value: str) -> str:
    known = ["auto", *(f.value for f in WebhookFormat)]
    if value not in known:
        raise ValueError(f"{value!r} is not a webhook format: one of {', '.join(known)}")
    return value


ConfigPath = Annotated[Path, BeforeValidator(_resolve_path)]
Account = Annotated[str, _matching(ACCOUNT_RE, "an account: exactly 12 digits, as a string")]
Region = Annotated[str, _matching(REGION_RE, "a region (like us-east-1)")]
RegistryUrl = Annotated[str, AfterValidator(_check_url)]
ProxyUrl = Annotated[str, AfterValidator(_check_proxy)]
# Trusted by origin (scheme, host, port): a path is allowed and ignored.
TokenRealmUrl = Annotated[str, AfterValidator(_check_realm_url)]
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
    """[journal]: any SQLAlchemy URL (a relative SQLite path is relative to the config file),
    and how many days events and finished jobs are kept (0: for ever)."""

    url: Annotated[str, AfterValidator(_resolve_journal_url)] = DEFAULT_JOURNAL_URL
    retention_days: Annotated[float, Field(ge=0)] = DEFAULT_RETENTION_DAYS


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
    """[workers]: concurrency limits, attempts, shutdown grace, the chunked-upload threshold and
    the age at which a job claimed by a process of another host is taken for an orphan."""

    concurrency: Annotated[int, Field(ge=1)] = DEFAULT_CONCURRENCY
    per_registry: Annotated[int, Field(ge=1)] = DEFAULT_MAX_IN_FLIGHT
    max_attempts: Annotated[int, Field(ge=1)] = 10
    max_deaths: Annotated[int, Field(ge=1)] = DEFAULT_MAX_DEATHS
    grace_period: Annotated[float, Field(ge=0)] = 30.0
    chunk_threshold: Annotated[int, Field(ge=MIN_CHUNK_THRESHOLD)] = DEFAULT_CHUNK_THRESHOLD
    orphan_after: Annotated[float, Field(ge=MIN_ORPHAN_AFTER)] = DEFAULT_ORPHAN_AFTER


class HttpConfig(_Listener):
    """[http]: where /healthz, /readyz, /metrics and the status API listen."""

    listen: Listen = "127.0.0.1:9478"


class WebhookAuth(StrEnum):
    """How a source registry's webhooks prove who sent them ([bridge.sources.<name>] auth)."""

    NONE = "none"  # only on a loopback listener
    BEARER = "bearer"  # Authorization: Bearer <secret>
    HEADER = "header"  # <header>: <secret>, verbatim (Harbor, ACR, Artifactory, EventBridge key)
    BASIC = "basic"  # Authorization: Basic <username>:<secret> (EventBridge connections)
    QUERY = "query"  # ?<query_parameter>=<secret> in the URL (Quay)
    HMAC_SHA256 = "hmac-sha256"  # X-Hub-Signature-256: sha256=<hex HMAC of the raw body> (GitHub)
    GOOGLE_OIDC = "google-oidc"  # Authorization: Bearer <Google-signed JWT> (Pub/Sub push)


class BridgeSourceConfig(_Section):
    """[bridge.sources.<name>]: how the webhooks of one source registry look and authenticate."""

    format: Annotated[str, AfterValidator(_check_format)] = "auto"
    auth: Annotated[WebhookAuth, Field(strict=False)]
    secret_file: ConfigPath | None = None
    header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]+$")] = "Authorization"
    username: str | None = None
    query_parameter: Annotated[str, Field(min_length=1)] = "token"
    # google-oidc: a JWKS (JSON) or PEM public key file, the audience the subscription was
    # given, and optionally the issuer and the push service account's email.
    keys_file: ConfigPath | None = None
    audience: str | None = None
    issuer: str = "https://accounts.google.com"
    email: str | None = None
    _secret: SecretStr | None = PrivateAttr(default=None)
    _keys: str | None = PrivateAttr(default=None)

    @property
    def secret(self) -> SecretStr | None:
        """The shared secret read from `secret_file`."""
        return self._secret

    @property
    def keys(self) -> str | None:
        """The text of `keys_file` (JWKS or PEM)."""
        return self._keys


class BridgeConfig(_Listener):
    """[bridge]: the registry-webhook receiver: an optional bearer token read from a file (for
    sources without their own [bridge.sources.<name>]), TLS, and per-source settings."""

    listen: Listen = "127.0.0.1:9479"
    token_file: ConfigPath | None = None
    tls_cert: ConfigPath | None = None
    tls_key: ConfigPath | None = None
    client_ca: ConfigPath | None = None
    sources: dict[RegistryName, BridgeSourceConfig] = Field(default_factory=dict)
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
    # Unset: HTTPS_PROXY / HTTP_PROXY / NO_PROXY decide; "none": never a proxy; else its URL.
    proxy: ProxyUrl | None = None
    # As a destination: copy non-distributable (foreign) layers, not only the manifests naming
    # them (docker's name for the setting).
    allow_nondistributable_artifacts: bool = False
    # "ecr": Amazon ECR's own API gives the tokens (GetAuthorizationToken), lists the
    # repositories and creates missing ones at a destination (the `ecr` extra: botocore).
    auth: Literal["ecr"] | None = None
    # As a source: the repositories to scan (backfill, verify, reconcile) instead of the
    # catalog, for registries without one (Docker Hub, GHCR) or with one closed to us.
    repositories: list[Annotated[str, AfterValidator(_check_repository)]] | None = None
    # ECR's API endpoint, when not the region's public one (a VPC endpoint; moto in the tests);
    # unset, botocore's own rules apply (AWS_ENDPOINT_URL_ECR included).
    ecr_endpoint: Annotated[str, AfterValidator(_check_endpoint)] | None = None
    # Token services on another host than the registry's that may receive its credentials
    # (a Bearer challenge's realm elsewhere is refused otherwise): their URLs.
    token_realms: list[TokenRealmUrl] = []
    _name: str = PrivateAttr(default="")

    @model_validator(mode="before")
    @classmethod
    def _location_from_ecr_url(cls, data: object) -> object:
        """An ECR URL (`<account>.dkr.ecr.<region>.amazonaws.com`) names the account and
        region: either may then be left out."""
        if isinstance(data, dict) and isinstance(data.get("url"), str):
            found = ecr_location(urlsplit(data["url"]).netloc)
            if found is not None:
                return {"account": found[0], "region": found[1], **data}
        return data

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
