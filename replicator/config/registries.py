"""[registries.<name>]: one registry's location, credentials, connection, rules and policy."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import AfterValidator, Field, PrivateAttr, SecretStr, model_validator

from replicator.config.fields import ConfigPath, Section, matching
from replicator.domain.images.refs import validate_repository
from replicator.domain.routing.policy import RegistryPolicy
from replicator.domain.routing.rules import ACCOUNT_RE, REGION_RE, Destination, ReplicationConfig
from replicator.errors import InvalidReferenceError
from replicator.registry.ecr import ECR_HOST_FORMS, ecr_location, looks_like_ecr
from replicator.registry.http.proxy import DIRECT, ProxyUrlError, parse_proxy_url
from replicator.registry.settings import READ_TIMEOUT_SECONDS

# A read timeout over an hour is a typo (milliseconds?): no registry answer takes that long.
MAX_READ_TIMEOUT_SECONDS = 3600.0


def _http_url(value: str, what: str) -> SplitResult:
    """The parts of `value`, an http(s) URL with a host; `what` completes "... is not"."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not {what}")
    return parts


def _check_port(parts: SplitResult, value: str) -> None:
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"{value!r} has an invalid port") from exc


def _check_url(value: str) -> str:
    parts = _http_url(value, "http(s)://host[:port]")
    if parts.username or parts.password:
        raise ValueError("credentials do not belong in the url; use username and password_file")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{value!r} has a path; give only http(s)://host[:port]")
    _check_port(parts, value)
    return f"{parts.scheme}://{parts.netloc.lower()}"


def _check_realm_url(value: str) -> str:
    parts = _http_url(value, "an http(s) URL of a token service")
    if parts.username or parts.password:
        raise ValueError(f"{value!r}: credentials do not belong in a token realm URL")
    _check_port(parts, value)
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
    _http_url(value, "an http(s):// URL")
    return value


Account = Annotated[str, matching(ACCOUNT_RE, "an account: exactly 12 digits, as a string")]
Region = Annotated[str, matching(REGION_RE, "a region (like us-east-1)")]
RegistryUrl = Annotated[str, AfterValidator(_check_url)]
ProxyUrl = Annotated[str, AfterValidator(_check_proxy)]
# Trusted by origin (scheme, host, port): a path is allowed and ignored.
TokenRealmUrl = Annotated[str, AfterValidator(_check_realm_url)]


class RegistryConfig(Section):
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
    token_realms: list[TokenRealmUrl] = Field(default_factory=list)
    # Blob bytes per second to and from this registry, all jobs together (a token bucket);
    # unset: no limit.
    max_bandwidth: Annotated[int, Field(ge=1)] | None = None
    # Seconds one exchange may wait for the registry's next bytes: longer for a registry that
    # verifies a multi-GiB blob before answering its final PUT (each try cut at the default
    # 120 s would never land it), shorter to give up sooner on one that hangs.
    read_timeout: Annotated[float, Field(gt=0, le=MAX_READ_TIMEOUT_SECONDS)] = READ_TIMEOUT_SECONDS
    _name: str = PrivateAttr(default="")

    @model_validator(mode="before")
    @classmethod
    def _location_from_ecr_url(cls, data: object) -> object:
        """An ECR URL (`<account>.dkr.ecr.<region>.amazonaws.com`) names the account and
        region: either may then be left out."""
        if isinstance(data, dict) and isinstance(data.get("url"), str):
            host = urlsplit(data["url"]).netloc
            found = ecr_location(host)
            if found is not None:
                return {"account": found[0], "region": found[1], **data}
            if looks_like_ecr(host) and not ("account" in data and "region" in data):
                raise ValueError(
                    f"{host} looks like an Amazon ECR registry but is not an ECR host this "
                    f"version recognises ({ECR_HOST_FORMS}), so it names no account and "
                    "region: give them as account and region of this registry (and check "
                    "the host name)"
                )
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
