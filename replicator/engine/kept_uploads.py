"""Blob uploads under way at a destination, kept in the journal as the registry acknowledges
their bytes, so a daemon killed mid-blob goes on from the registry's offset after its restart
(a session the registry has dropped since is started over).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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

    async def find(self, repository: str, digest: str) -> tuple[str, int] | None:
        """(upload URL, bytes acknowledged) of an upload of `digest` left under way here."""
        return await self.log.kept_upload((self.destination, repository, digest))

    async def keep(self, repository: str, digest: str, location: str, offset: int) -> None:
        """The upload of `digest` is at `location` with `offset` bytes acknowledged."""
        await self.log.keep_upload((self.destination, repository, digest), location, offset)

    async def forget(self, repository: str, digest: str) -> None:
        """The upload of `digest` is committed or given up."""
        await self.log.forget_upload((self.destination, repository, digest))
