"""The scan: enumerate the source registries, HEAD-compare every tag with every destination, and
hand each repository's plans, a page of tags at a time, to a sink (scan/sinks.py: the journal, or
a dry run's stream). `replicator backfill` (scan/backfill_run.py) and the daemon's reconcile pass
(scan/reconcile.py) are this scan with another sink.

Facts are gathered here and decided in `domain.routing.scan`. The scan is cheap when everything is
replicated: one catalog and one tag list per source repository, then HEAD requests only (one per
source tag, one per tag and destination, TAGS_IN_FLIGHT tags at once); the destination's tag list
is read only when every tag is missing there and the policy must know whether the repository
exists. The destination's tag list cannot spare the HEADs: it names no digest, and the scan would
have to hold all of it (or merge two listings in an order not every registry keeps) to know
which tags are missing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from replicator.config.loading import Config
from replicator.config.sites import registry_client
from replicator.domain.jobs import JobKey, JobKind
from replicator.domain.routing import Site, existence_matters
from replicator.domain.routing.scan import (
    TagAction,
    TagPlan,
    TagRecord,
    after_journal,
    asks_known,
    deletes_reach,
    hold_newer,
    plan_tag,
    replay_delete,
    targets,
)
from replicator.engine.gather import for_each_repository, gather_all, map_bounded, unless_set
from replicator.errors import JournalError, ReplicatorError
from replicator.logs import get_logger
from replicator.registry import manifests, tags
from replicator.registry.client import RegistryClient
from replicator.registry.manifests import ManifestHead
from replicator.registry.pool import ClientPool
from replicator.scan.lost_deletes import origin_facts
from replicator.scan.repositories import repository_names

if TYPE_CHECKING:
    from datetime import datetime

    from replicator.journal.models import JobRow

log = get_logger(__name__)

# Tags of a page whose HEADs are in flight at once, each tag's source HEAD followed at once by
# its destinations': twice a registry's small-request slots (32: 8 transfer slots x 4), so the
# source's and the destinations' slots stay busy together. A page used to HEAD the source for
# all its tags, then the destinations, one registry idle while the other worked.
TAGS_IN_FLIGHT = 64


@dataclass(frozen=True, slots=True)
class ScanOptions:
    """What to scan: one source or all, one destination or all, a repository prefix, and
    the repositories named on the command line (instead of the config's list or the catalog)."""

    source: str | None = None
    destination: str | None = None
    repository_prefix: str = ""
    repositories: tuple[str, ...] | None = None


@dataclass(slots=True)
class ScanCounts:
    """Running totals of a scan (the progress line reads them while it runs)."""

    repositories: int = 0
    tags: int = 0
    up_to_date: int = 0
    copies: int = 0
    denied: int = 0
    repairs: int = 0
    held: int = (
        0  # copies left out: the destination's tag is newer (domain.routing.scan.hold_newer)
    )
    errors: list[str] = field(default_factory=list)


class ScanJournal(Protocol):
    """What a scan and its sink need of the journal (a Journal, or `replicator backfill`'s
    stand-in that opens one only when the scan first finds work)."""

    async def status(
        self,
        source: str | None,
        repository: str,
        *,
        digest: str | None = None,
        tag: str | None = None,
    ) -> list[JobRow]: ...

    async def tag_jobs(
        self,
        source: str | None,
        repository: str,
        tags: Sequence[str],
        digests: Sequence[str] = (),
    ) -> list[JobRow]: ...

    async def add_jobs(
        self,
        keys: Sequence[JobKey],
        *,
        pushed_at: datetime | None = None,
        denied: Mapping[JobKey, str] | None = None,
    ) -> int: ...


AfterRepository = Callable[[Site, str], Awaitable[None]]


class PlanSink(Protocol):
    """Receives the plans of a repository a page of tags at a time, as their facts come in."""

    async def __call__(self, source: Site, repository: str, plans: Sequence[TagPlan]) -> None: ...


def sources_of(config: Config, sites: Mapping[str, Site], only: str | None) -> list[Site]:
    """The registries to scan: `only`, else every registry with replication rules."""
    if only is not None:
        if only not in sites:
            raise ReplicatorError(f"--source {only!r} names no registry of {config.path}")
        return [sites[only]]
    return [site for site in sites.values() if site.replication.rules]


async def source_tags(
    client: RegistryClient, repository: str, *, on_invalid: tags.InvalidName | None = None
) -> list[tuple[str, str]]:
    """(tag, digest) of every valid tag of a source repository, by HEAD; a tag gone meanwhile is
    left out, an invalid one is handed to `on_invalid`."""
    names = await tags.list_tags(client, repository, on_invalid=on_invalid)
    return await tag_digests(client, repository, names)


async def tag_digests(
    client: RegistryClient, repository: str, names: Sequence[str]
) -> list[tuple[str, str]]:
    """(tag, digest) of `names` at the source, by HEAD; a tag gone meanwhile is left out."""
    heads = await gather_all([manifests.head(client, repository, tag) for tag in names])
    return [(tag, head.digest) for tag, head in zip(names, heads, strict=True) if head is not None]


class Scanner:
    """Gathers the facts of one scan and hands each repository's plans to a sink."""

    def __init__(
        self,
        config: Config,
        sites: Mapping[str, Site],
        pool: ClientPool,
        options: ScanOptions,
        *,
        journal: ScanJournal | None = None,
        counts: ScanCounts | None = None,
        after_repository: AfterRepository | None = None,
    ) -> None:
        self._config = config
        self._sites = sites
        self._pool = pool
        self._options = options
        self._journal = journal
        self.counts = counts or ScanCounts()
        # Called once a repository's tags are all scanned (the daemon's reconcile: its untagged
        # replicas, scan/untagged_replicas.py); its registry errors count as the repository's.
        self._after_repository = after_repository

    async def run(self, sink: PlanSink, *, stop: asyncio.Event | None = None) -> ScanCounts:
        """Scan every chosen source; a repository that cannot be read is counted, not fatal."""
        for source in sources_of(self._config, self._sites, self._options.source):
            client = registry_client(self._pool, self._config, source.name)

            async def one(repository: str, source: Site = source) -> None:
                await self._repository(source, repository, sink, stop)

            try:
                names = repository_names(
                    client,
                    self._config.registries[source.name],
                    chosen=self._options.repositories,
                    prefix=self._options.repository_prefix,
                    on_invalid=self._error,
                )
                await for_each_repository(names, one, stop=stop)
            except JournalError:
                raise
            except ReplicatorError as exc:
                self._error(f"{source.name}: catalog: {exc}")
        return self.counts

    def _error(self, message: str) -> None:
        self.counts.errors.append(message)
        log.warning("scan_error", error=message)

    async def _repository(
        self, source: Site, repository: str, sink: PlanSink, stop: asyncio.Event | None
    ) -> None:
        """Scan one repository a page of tags at a time (memory flat in its number of tags),
        stopping between pages when `stop` is set."""
        src = registry_client(self._pool, self._config, source.name)
        scanned = 0
        try:
            async for page in tags.tag_pages(src, repository, on_invalid=self._error):
                plans = await unless_set(stop, self._plans(source, repository, page))
                if plans is None:
                    return  # stopped: within the page, its requests cancelled
                scanned += len(plans)
                self._count(source, repository, plans)
                await sink(source, repository, plans)
            if self._after_repository is not None and not (stop is not None and stop.is_set()):
                await self._after_repository(source, repository)
        except JournalError:
            raise  # not this repository's fault: the whole run cannot record anything
        except ReplicatorError as exc:
            self._error(f"{source.name}/{repository}: {exc.code}: {exc}")
            return
        self.counts.repositories += 1
        log.debug("repository_scanned", source=source.name, repository=repository, tags=scanned)

    def _count(self, source: Site, repository: str, plans: Sequence[TagPlan]) -> None:
        for plan in plans:
            if plan.action is TagAction.UP_TO_DATE:
                self.counts.up_to_date += 1
            elif plan.action is TagAction.COPY:
                self.counts.copies += 1
            elif plan.action is TagAction.DENIED:
                self.counts.denied += 1
            elif plan.action is TagAction.HELD:
                self.counts.held += 1
                log.info(
                    "tag_held", source=source.name, destination=plan.key.destination,
                    repository=repository, tag=plan.key.tag, reason=plan.reason,
                )  # fmt: skip
            else:
                self.counts.repairs += 1

    async def _plans(self, source: Site, repository: str, page: Sequence[str]) -> list[TagPlan]:
        src = registry_client(self._pool, self._config, source.name)

        async def facts(tag: str) -> tuple[str, str, dict[str, ManifestHead | None]] | None:
            """The tag's digest at the source, then its HEAD at each destination it goes to."""
            head = await manifests.head(src, repository, tag)
            if head is None:
                return None  # gone meanwhile
            names = [
                target.name
                for target in targets(
                    source, self._sites, repository=repository, tag=tag,
                    only=self._options.destination,
                )
            ]  # fmt: skip
            clients = [registry_client(self._pool, self._config, name) for name in names]
            heads = await gather_all([manifests.head(dst, repository, tag) for dst in clients])
            return tag, head.digest, dict(zip(names, heads, strict=True))

        found = [f for f in await map_bounded(facts, page, TAGS_IN_FLIGHT) if f is not None]
        self.counts.tags += len(found)
        wanted: dict[str, list[tuple[str, str, ManifestHead | None]]] = {}
        for tag, digest, heads in found:
            for name, head in heads.items():
                wanted.setdefault(name, []).append((tag, digest, head))
        plans: list[TagPlan] = []
        for name, facts_of in wanted.items():
            plans.extend(await self._compare(source, self._sites[name], repository, facts_of))
        if self._journal is not None and any(p.action is not TagAction.UP_TO_DATE for p in plans):
            # Every source's jobs of the page's tags (and untagged ones of its digests: a
            # delete by digest): in a cycle (A -> B and B -> A) the destination's own pushes
            # are jobs of it as a source.
            asked = sorted({p.key.tag for p in plans if p.key.tag})
            digests = sorted({p.key.digest for p in plans})
            rows = await self._journal.tag_jobs(None, repository, asked, digests)
            recorded = {row.key: row.state for row in rows if row.source == source.name}
            records = [tag_record(row) for row in rows]
            plans = [after_journal(hold_newer(p, records), recorded.get(p.key)) for p in plans]
            plans = [await self._replayed(repository, p) for p in plans]
        return plans

    async def _replayed(self, repository: str, plan: TagPlan) -> TagPlan:
        """`plan` with the delete jobs of its origin's lost delete event, when it is a copy back
        held for a delete the journal does not record (domain.routing.scan.replay_delete): the
        origin's bytes tell whether it still serves the image, or its parts (scan.lost_deletes)."""
        if not plan.unjournalled_delete:
            return plan
        origin, replica = self._sites[plan.key.destination], self._sites[plan.key.source]
        if not deletes_reach(origin, replica, repository=repository, tag=plan.key.tag):
            return plan
        serves, keeps = await origin_facts(
            registry_client(self._pool, self._config, origin.name),
            registry_client(self._pool, self._config, replica.name),
            repository,
            plan.key.digest,
        )
        replayed = replay_delete(
            plan, deletes_back=True, origin_has_digest=serves, origin_keeps_parts=keeps
        )
        if not replayed.deletes:
            log.warning(
                "lost_delete_not_replayed",
                source=replica.name,
                destination=origin.name,
                repository=repository,
                tag=plan.key.tag,
                digest=plan.key.digest,
                reason=replayed.reason,
            )
        return replayed

    async def _compare(
        self,
        source: Site,
        target: Site,
        repository: str,
        facts: list[tuple[str, str, ManifestHead | None]],
    ) -> list[TagPlan]:
        """Plans of (tag, source digest, destination HEAD) at `target`."""
        dst = registry_client(self._pool, self._config, target.name)
        exists = any(head is not None for _, _, head in facts)
        if not exists and existence_matters(source, target, repository):
            # Only then is the destination's tag list read: a no-op re-run stays HEAD-only.
            exists = await tags.repository_exists(dst, repository)
        # A destination that replicates too may have deleted the tag (even its last one, the
        # repository then known with no tag) or lost its storage (not known): hold_newer asks.
        known = exists or (asks_known(target) and not await tags.repository_absent(dst, repository))
        return [
            plan_tag(
                source,
                target,
                repository=repository,
                tag=tag,
                source_digest=digest,
                dest_digest=head.digest if head is not None else None,
                repository_exists=exists,
                repository_known=known,
            )
            for tag, digest, head in facts
        ]


def tag_record(row: JobRow) -> TagRecord:
    """A journal row as the scan's rules read it (domain.routing.scan.hold_newer, and
    domain.routing.untagged)."""
    finished = row.finished_at.timestamp() if row.finished_at is not None else None
    pushed = row.pushed_at.timestamp() if row.pushed_at is not None else None
    return TagRecord(
        row.source, row.destination, row.digest, row.tag, row.state, finished, pushed,
        delete=row.kind is JobKind.DELETE, origin=row.origin,
    )  # fmt: skip
