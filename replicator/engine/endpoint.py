"""A repository at a registry: what a copy reads from and writes to."""

from __future__ import annotations

from dataclasses import dataclass

from replicator.registry.client import RegistryClient


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A repository at a registry."""

    client: RegistryClient
    repository: str

    def __str__(self) -> str:
        return f"{self.client.host}/{self.repository}"
