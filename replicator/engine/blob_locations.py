"""Where blobs are known to live at destination registries, for cross-repository mounts.

A hint, never the truth: a destination restored from an empty backup or garbage-collected
holds none of it any more. An answer that contradicts it (a HEAD saying absent, a mount
refused, a manifest PUT refused MANIFEST_BLOB_UNKNOWN) makes the copier forget (`contradicted`,
`forget_destination`) and ask the destination again.
"""

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
        # (host, digest) -> repositories known to hold it, each with the `mark` of when it was
        # last seen there, most recent last (a few at most)
        self._known: OrderedDict[tuple[str, str], dict[str, int]] = OrderedDict()
        # (destination host, namespace) -> a repository there to try mounting from, or None
        self._siblings: dict[tuple[str, str], str | None] = {}
        # Counts what was remembered: a question asked of a destination at mark M contradicts
        # only what was remembered before M (a copy that placed the blob meanwhile is right).
        self._marks = 0
        # Destination hosts that refused a guessed mount (domain/transfers/mounts.py): no more
        # guesses there.
        self._no_guesses: set[str] = set()

    def mark(self) -> int:
        """The moment before asking a destination, for `contradicted`."""
        return self._marks

    def remember(self, host: str, digest: str, repository: str) -> None:
        """`repository` at `host` holds `digest` (it was seen there, copied or mounted)."""
        key = (host, digest)
        holders = self._known.setdefault(key, {})
        holders.pop(repository, None)
        self._marks += 1
        holders[repository] = self._marks
        while len(holders) > HOLDERS_PER_BLOB:
            del holders[next(iter(holders))]
        self._known.move_to_end(key)
        while len(self._known) > self._cap:
            self._known.popitem(last=False)

    def stop_guessing(self, host: str) -> None:
        """`host` refused a guessed mount: `sibling` offers no more guesses there."""
        self._no_guesses.add(host)

    def guessing(self, host: str) -> bool:
        """Whether mounts from a guessed sibling repository are still tried at `host`."""
        return host not in self._no_guesses

    def holder(self, host: str, digest: str) -> str | None:
        """A repository at `host` known to hold `digest` (the most recently seen), if any."""
        holders = self._known.get((host, digest))
        return next(reversed(holders)) if holders else None

    def holds(self, host: str, digest: str, repository: str) -> bool:
        """Whether `repository` at `host` is known to hold `digest` already."""
        return repository in self._known.get((host, digest), ())

    def contradicted(self, host: str, digest: str, repository: str, *, asked_at: int) -> bool:
        """`repository` at `host` answered that it lacks `digest` to a question asked at mark
        `asked_at`: forget that it holds it, unless it was seen there since; whether it was
        believed (and is now forgotten)."""
        holders = self._known.get((host, digest))
        if holders is None or holders.get(repository, asked_at + 1) > asked_at:
            return False
        del holders[repository]
        if not holders:
            del self._known[(host, digest)]
        return True

    def forget_destination(self, host: str) -> int:
        """Forget everything believed of `host` (a manifest PUT there was refused for a blob
        believed present: it may have been wiped); how many blobs were believed there."""
        stale = [key for key in self._known if key[0] == host]
        for key in stale:
            del self._known[key]
        for key in [key for key in self._siblings if key[0] == host]:
            del self._siblings[key]
        return len(stale)

    async def sibling(self, client: RegistryClient, repository: str) -> str | None:
        """Another repository in `repository`'s namespace at the destination, looked up once.

        It is a guess for mounts of blobs this process has not seen at the destination (an
        earlier run pushed them): a wrong guess costs nothing, the registry then opens an upload
        (or refuses the mount, and is offered no more guesses: None once it has).
        """
        if not self.guessing(client.host):
            return None
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
