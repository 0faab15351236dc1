"""Which repositories of a source a scan visits: a list given for it, else its catalog.

Registries without a catalog (Docker Hub, GHCR, ECR without `auth = "ecr"`) or with one closed
to the account used cannot be enumerated: the operator names the repositories instead, in the
config (`repositories = [...]` on the source) or on the command line (`--repository`,
`--repositories-from`), which wins over the config for that run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from replicator.config.loading import RegistryConfig
from replicator.registry import tags
from replicator.registry.client import RegistryClient


async def _listed(names: Sequence[str], prefix: str) -> AsyncIterator[str]:
    for name in dict.fromkeys(names):  # in the given order, each once
        if tags.under_prefix(name, prefix):
            yield name


def repository_names(
    client: RegistryClient,
    registry: RegistryConfig,
    *,
    chosen: Sequence[str] | None = None,
    prefix: str = "",
    on_invalid: tags.InvalidName | None = None,
) -> AsyncIterator[str]:
    """The repositories to visit at `registry`: `chosen` (the command line's), else the
    config's `repositories`, else the catalog; those under `prefix`."""
    named = chosen if chosen is not None else registry.repositories
    if named is not None:
        return _listed(named, prefix)
    return tags.catalog(client, prefix, on_invalid=on_invalid)
