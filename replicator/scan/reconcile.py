"""One reconcile pass of the daemon (daemon/reconcile.py runs it every `[reconcile] interval`):
the backfill scan over every source, its jobs journalled for the daemon's runner, its repairs
run through that runner's limits as the scan finds them. The pass keeps no job's key (the
daemon's runner works the journal) and a bounded queue of repairs: flat in the number of tags."""

from __future__ import annotations

from collections.abc import Mapping

from replicator.config.loading import Config
from replicator.domain.jobs import TEMPORARY_FAILURES
from replicator.domain.routing import Site
from replicator.engine.runner import JobRunner
from replicator.journal.store import Journal
from replicator.logs import get_logger
from replicator.registry.pool import ClientPool
from replicator.scan.repair import RepairStream
from replicator.scan.scanning import ScanCounts, Scanner, ScanOptions
from replicator.scan.sinks import Journaller
from replicator.scan.untagged_replicas import UntaggedReplicas

log = get_logger(__name__)


async def reconcile_once(
    config: Config,
    sites: Mapping[str, Site],
    journal: Journal,
    *,
    pool: ClientPool,
    runner: JobRunner,
) -> ScanCounts:
    """One reconcile pass: give FAILED jobs whose cause was temporary a new chance, scan every
    source, journal what is missing (then wake `runner`, which runs the jobs), repair what the
    destinations lost (through `runner`'s limits), and journal the deletes whose events were
    lost for images the daemon left untagged (scan/untagged_replicas.py)."""
    retried = await journal.retry_failed(codes=TEMPORARY_FAILURES)
    if retried:
        runner.wake()
    repairs = RepairStream(journal, lambda: runner, workers=config.workers.concurrency)
    sink = Journaller(journal, wake=runner.wake, repairs=repairs)
    untagged = UntaggedReplicas(config, sites, pool, journal)
    replayed = 0

    async def after_repository(source: Site, repository: str) -> None:
        nonlocal replayed
        keys = await untagged.deletes(source, repository)
        if keys:
            replayed += await journal.add_jobs(keys)
            runner.wake()

    scanner = Scanner(
        config, sites, pool, ScanOptions(), journal=journal, after_repository=after_repository
    )
    async with repairs:
        counts = await scanner.run(sink)
    tally = repairs.tally
    log.info(
        "reconcile_pass",
        retried=retried,
        repositories=counts.repositories,
        tags=counts.tags,
        up_to_date=counts.up_to_date,
        jobs=sink.journalled,
        untagged_deletes=replayed,
        denied=counts.denied,
        held=counts.held,
        repaired=tally.repaired.total(),
        repairs_failed=tally.failed.total(),
        errors=len(counts.errors),
    )
    return counts
