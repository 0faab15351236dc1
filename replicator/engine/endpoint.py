"""A repository at a registry: what a copy reads from and writes to."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from replicator.domain.events.echoes import WriteAction
from replicator.engine.kept_uploads import KeptUploads
from replicator.registry.client import RegistryClient

# Told of the writes a copy or a delete is about to make at a destination (action, repository
# and each (digest, tag) reference), before it makes them: the daemon journals them, so the
# events the registry sends about them are known for echoes (domain/events/echoes.py).
AnnounceWrites = Callable[[WriteAction, str, Sequence[tuple[str, str | None]]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A repository at a registry; `announce`, when given, is told of each write before it is
    made there; `uploads`, when given, keeps the blob uploads under way there; as a destination,
    `foreign_layers` copies non-distributable (foreign) layers too, not only the manifests
    naming them (docker's allow-nondistributable-artifacts), and `creates_repositories` makes
    a missing repository before the copy (ECR: pushing does not) — the copy's policy, not the
    client's."""

    client: RegistryClient
    repository: str
    announce: AnnounceWrites | None = None
    uploads: KeptUploads | None = None
    foreign_layers: bool = False
    creates_repositories: bool = False

    async def writing(self, action: WriteAction, refs: Sequence[tuple[str, str | None]]) -> None:
        """Tell `announce` (if any) of the writes about to be made here."""
        if self.announce is not None and refs:
            await self.announce(action, self.repository, refs)

    def __str__(self) -> str:
        return f"{self.client.host}/{self.repository}"
