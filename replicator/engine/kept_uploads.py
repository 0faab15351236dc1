"""Blob uploads under way at a destination, kept in the journal as the registry acknowledges
their bytes, so a daemon killed mid-blob goes on from the registry's offset after its restart
(a session the registry has dropped since is started over). A job that ends for good ends the
sessions it kept (`end_kept`): nobody would go on with them, and the registry would hold them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from replicator.registry.blobs import cancel_upload
from replicator.registry.client import RegistryClient, push_scope

Place = tuple[str, str, str]  # destination (its name in the config), repository, digest


class UploadLog(Protocol):
    """Where uploads under way are kept (the journal)."""

    async def keep_upload(self, place: Place, location: str, offset: int) -> None: ...

    async def kept_upload(self, place: Place) -> tuple[str, int] | None: ...

    async def forget_upload(self, place: Place) -> None: ...


@dataclass(frozen=True, slots=True)
class KeptUploads:
    """The uploads under way at one destination, kept in `log`."""

    log: UploadLog
    destination: str
    # (repository, digest) of the uploads this job kept and has not committed or given up.
    mine: set[tuple[str, str]] = field(default_factory=set, compare=False)

    async def find(self, repository: str, digest: str) -> tuple[str, int] | None:
        """(upload URL, bytes acknowledged) of an upload of `digest` left under way here."""
        return await self.log.kept_upload((self.destination, repository, digest))

    async def keep(self, repository: str, digest: str, location: str, offset: int) -> None:
        """The upload of `digest` is at `location` with `offset` bytes acknowledged."""
        await self.log.keep_upload((self.destination, repository, digest), location, offset)
        self.mine.add((repository, digest))

    async def forget(self, repository: str, digest: str) -> None:
        """The upload of `digest` is committed or given up."""
        await self.log.forget_upload((self.destination, repository, digest))
        self.mine.discard((repository, digest))

    async def end_kept(self, client: RegistryClient) -> int:
        """End at the registry (DELETE, best effort) and forget the uploads this job kept: the
        job ended for good, so no attempt will go on with them. How many were ended."""
        ended = 0
        for repository, digest in sorted(self.mine):
            found = await self.find(repository, digest)
            if found is not None:
                await cancel_upload(client, found[0], push_scope(repository))
                ended += 1
            await self.forget(repository, digest)
        return ended
