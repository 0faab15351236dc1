"""Where blobs are known to live at destination registries, for cross-repository mounts."""

from __future__ import annotations

from collections import OrderedDict

from replicator.errors import ReplicatorError
from replicator.logs import get_logger
from replicator.registry import tags
from replicator.registry.client import RegistryClient

log = get_logger(__name__)

# Remembered (destination, digest) entries; a few hundred bytes each, so tens of MB at the cap.
KNOWN_BLOBS_CAP = 100_000
# Repositories remembered per blob: enough to tell "already placed here" for the repositories
# being copied at once (a shared base layer lands in many), without growing per blob.
HOLDERS_PER_BLOB = 32


class BlobLocations:
    """What this process has seen: blob digest -> a repository holding it, per destination."""

    def __init__(self, cap: int = KNOWN_BLOBS_CAP) -> None:
        self._cap = cap
        # (host, digest) -> repositories known to hold it, most recent last (a few at most)
        self._known: OrderedDict[tuple[str, str], list[str]] = OrderedDict()
        # (destination host, namespace) -> a repository there to try mounting from, or None
        self._siblings: dict[tuple[str, str], str | None] = {}

    def remember(self, host: str, digest: str, repository: str) -> None:
        """`repository` at `host` holds `digest` (it was seen there, copied or mounted)."""
        key = (host, digest)
        holders = self._known.setdefault(key, [])
        if repository in holders:
            holders.remove(repository)
        holders.append(repository)
        del holders[:-HOLDERS_PER_BLOB]
        self._known.move_to_end(key)
        while len(self._known) > self._cap:
            self._known.popitem(last=False)

    def holder(self, host: str, digest: str) -> str | None:
        """A repository at `host` known to hold `digest` (the most recently seen), if any."""
        holders = self._known.get((host, digest))
        return holders[-1] if holders else None

    def holds(self, host: str, digest: str, repository: str) -> bool:
        """Whether `repository` at `host` is known to hold `digest` already."""
        return repository in self._known.get((host, digest), ())

    async def sibling(self, client: RegistryClient, repository: str) -> str | None:
        """Another repository in `repository`'s namespace at the destination, looked up once.

        It is a guess for mounts of blobs this process has not seen at the destination (an
        earlier run pushed them): a wrong guess costs nothing, the registry then opens an upload.
        """
        namespace = repository.rsplit("/", 1)[0] if "/" in repository else ""
        key = (client.host, namespace)
        if key not in self._siblings:
            found: str | None = None
            try:
                async for name in tags.catalog(client, namespace):
                    if name != repository:
                        found = name
                        break
            except ReplicatorError as exc:
                # The catalog may be forbidden (token scope) or absent: then no guess.
                log.debug("catalog_unavailable", host=client.host, error=str(exc))
            self._siblings[key] = found
        return self._siblings[key]
