"""The config's registries as the domain sees them (Sites) and as the client reaches them."""

from __future__ import annotations

from collections.abc import Mapping

from replicator.config.loading import Config, RegistryConfig
from replicator.domain.routing import Site
from replicator.registry.auth import Credentials, load_docker_config
from replicator.registry.pool import RegistrySettings


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


def credentials_of(registry: RegistryConfig) -> Credentials | None:
    """Username and password file, else the Docker config.json entry, else anonymous."""
    if registry.username and registry.password is not None:
        return Credentials(registry.username, registry.password.get_secret_value())
    if registry.docker_config is not None:
        return load_docker_config(registry.docker_config, registry.host)
    return None


def settings_for(registry: RegistryConfig, max_in_flight: int) -> RegistrySettings:
    """How the client reaches `registry`: scheme from its URL, auth, TLS."""
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
    )
