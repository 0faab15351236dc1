"""After a repository's tags in the daemon's reconcile pass: replicas the daemon left untagged
whose origin deleted them with the delete's event lost for good (domain.routing.untagged). The
tag scan cannot see those: every tag of both sides agrees.

Facts: the journal's copies whose tag the daemon later moved, a page at a time (memory flat
however many a repository has), and for each one the origin's bytes (scan/lost_deletes.py: does
it serve the image, and if not, its parts; served is the common case, only the tag moved), the
replica's HEAD of the digest, and the journal's jobs of the digest. Only the daemon's reconcile
asks: `replicator backfill` opens no journal on a pass with nothing to copy, and the daemon's
next pass covers what a backfill leaves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from replicator.config.loading import Config
from replicator.config.sites import registry_client
from replicator.domain.jobs import JobKey
from replicator.domain.routing import Site
from replicator.domain.routing.scan import deletes_reach
from replicator.domain.routing.untagged import replay_untagged_delete
from replicator.logs import get_logger
from replicator.registry import manifests
from replicator.registry.pool import ClientPool
from replicator.scan.lost_deletes import origin_facts
from replicator.scan.scanning import ScanJournal, tag_record

if TYPE_CHECKING:
    from replicator.journal.models import JobRow

log = get_logger(__name__)

# Copies read from the journal at a time: a page's rows (~1 KiB each) and its requests are all a
# check holds, whatever the repository's history.
MOVED_COPIES_PAGE = 500


class MovedCopiesJournal(ScanJournal, Protocol):
    """What the check needs of the journal: the scan's reads, and the moved copies."""

    async def moved_copies(
        self, source: str, destination: str, repository: str, *, after: int, limit: int
    ) -> list[JobRow]: ...


class UntaggedReplicas:
    """Finds, a repository at a time, the delete jobs of a source's lost deletes of images the
    daemon left untagged at the other registries."""

    def __init__(
        self,
        config: Config,
        sites: Mapping[str, Site],
        pool: ClientPool,
        journal: MovedCopiesJournal,
    ) -> None:
        self._config = config
        self._sites = sites
        self._pool = pool
        self._journal = journal

    async def deletes(self, source: Site, repository: str) -> list[JobKey]:
        """The delete jobs of `source`'s lost deletes in `repository`."""
        found: list[JobKey] = []
        for target in self._sites.values():
            if target.location not in source.replication.destinations:
                continue  # the source never replicates there: no copy of it to look for
            after = 0
            while True:
                page = await self._journal.moved_copies(
                    source.name, target.name, repository, after=after, limit=MOVED_COPIES_PAGE
                )
                for copy in page:
                    key = await self._judge(source, target, copy)
                    if key is not None:
                        found.append(key)
                if len(page) < MOVED_COPIES_PAGE:
                    break
                after = page[-1].id
        return found

    async def _judge(self, source: Site, target: Site, copy: JobRow) -> JobKey | None:
        repository, digest = copy.repository, copy.digest
        if not deletes_reach(source, target, repository=repository, tag=copy.tag):
            return None
        origin = registry_client(self._pool, self._config, source.name)
        replica = registry_client(self._pool, self._config, target.name)
        if await manifests.head(replica, repository, digest) is None:
            return None  # gone from the replica already (or never left untagged there)
        serves, keeps = await origin_facts(origin, replica, repository, digest)
        if serves is not False:
            return None  # served (only the tag moved), or other bytes: nothing to replay
        rows = await self._journal.status(None, repository, digest=digest)
        key = replay_untagged_delete(
            tag_record(copy), [tag_record(row) for row in rows], repository=repository,
            deletes_back=True, origin_has_digest=False, replica_has_digest=True,
            origin_keeps_parts=keeps,
        )  # fmt: skip
        where = {"source": source.name, "destination": target.name, "repository": repository}
        if key is not None:
            log.info("lost_delete_replayed", **where, digest=digest, untagged=True)
        elif not keeps:
            log.warning(
                "lost_delete_not_replayed", **where, digest=digest,
                reason="the origin lacks the image's parts too (restored from an older backup, "
                "or garbage-collected): the untagged replica is kept",
            )  # fmt: skip
        return key
