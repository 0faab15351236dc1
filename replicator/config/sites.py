"""The config's registries as the domain sees them (Sites) and as the client reaches them."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Mapping

from replicator.config.loading import Config, RegistryConfig
from replicator.domain.routing import Site
from replicator.errors import ConfigError
from replicator.registry.client import RegistryClient
from replicator.registry.credentials import CredentialProvider, Credentials, StaticCredentials
from replicator.registry.credhelper import helper_executable, helper_path
from replicator.registry.dockerconfig import DockerConfigCredentials, inspect
from replicator.registry.ecr import EcrApi, EcrCredentials
from replicator.registry.pool import ClientPool
from replicator.registry.settings import RegistrySettings, Timeouts


def sites_of(config: Config) -> Mapping[str, Site]:
    """Every configured registry as a routing Site, by name."""
    return {
        name: Site(
            name=name,
            account=registry.account,
            region=registry.region,
            replication=registry.replication,
            policy=registry.policy,
        )
        for name, registry in config.registries.items()
    }


def credentials_of(registry: RegistryConfig) -> CredentialProvider | None:
    """Username and password file, else the Docker config.json (entries and credential
    helpers, asked when the registry first wants credentials), else anonymous.

    Called for every job: equal providers (the same password; the same, unchanged config.json)
    let the client keep its tokens, a rotated password file after a reload does not."""
    api = ecr_api_of(registry)
    if api is not None:
        return EcrCredentials.of(api)
    if registry.username and registry.password is not None:
        return StaticCredentials(
            Credentials(registry.username, registry.password.get_secret_value()),
            source=f"username and password_file of registries.{registry.name}",
        )
    if registry.docker_config is not None:
        return DockerConfigCredentials([registry.docker_config], registry.host)
    return None


def ecr_api_of(registry: RegistryConfig) -> EcrApi | None:
    """The ECR API of a registry with auth = "ecr" (one per account, region and endpoint in a
    process, so its botocore client and token are shared), else None."""
    if registry.auth != "ecr":
        return None
    return _ecr_api(registry.account, registry.region, registry.ecr_endpoint)


@functools.cache
def _ecr_api(registry_id: str, region: str, endpoint_url: str | None) -> EcrApi:
    return EcrApi(registry_id, region, endpoint_url)


def settings_for(registry: RegistryConfig, max_in_flight: int) -> RegistrySettings:
    """How the client reaches `registry`, the one place a `[registries.<name>]` becomes the
    client's record: scheme from its URL, credentials, TLS, proxy, limits."""
    verify: bool | str = str(registry.ca_file) if registry.ca_file else registry.tls_verify
    cert = (
        (str(registry.client_cert), str(registry.client_key))
        if registry.client_cert and registry.client_key
        else None
    )
    return RegistrySettings(
        host=registry.host,
        scheme=registry.url.split("://", 1)[0],
        credentials=credentials_of(registry),
        verify=verify,
        cert=cert,
        max_in_flight=max_in_flight,
        proxy=registry.proxy,
        ecr=ecr_api_of(registry),
        token_realms=tuple(registry.token_realms),
        max_bandwidth=registry.max_bandwidth,
        timeouts=Timeouts(read=registry.read_timeout),
    )


def registry_client(pool: ClientPool, config: Config, name: str) -> RegistryClient:
    """The pooled client of the registry called `name`, with `[workers] per_registry` slots."""
    return pool.client(settings_for(config.registries[name], config.workers.per_registry))


def describe_credentials(registry: RegistryConfig) -> tuple[str, str | None]:
    """How `registry` authenticates (never a secret), and a warning when that cannot work on
    this machine: a credential helper not on PATH fails every request that needs credentials."""
    if registry.auth == "ecr":
        where = registry.ecr_endpoint or "the region's endpoint"
        if importlib.util.find_spec("botocore") is None:
            return "ECR tokens", "botocore is not installed: pip install 'replicator[ecr]'"
        return f"ECR tokens (GetAuthorizationToken at {where})", None
    if registry.username:
        return "username and password_file", None
    if registry.docker_config is None:
        return "anonymous", None
    try:
        found = inspect(registry.docker_config, registry.host)
    except ConfigError as exc:  # rewritten since it was loaded
        return f"docker_config {registry.docker_config}", str(exc)
    if found is None:
        return f"docker_config {registry.docker_config}: nothing for {registry.host}", None
    if found.helper is not None and helper_path(found.helper) is None:
        return found.describe(), (
            f"{helper_executable(found.helper)} is not on PATH: requests to {registry.host} "
            "that need credentials will fail"
        )
    return found.describe(), None
