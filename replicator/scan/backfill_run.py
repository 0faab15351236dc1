"""A backfill run: scan the sources, journal the missing images' jobs and run them to the end.

The scan (scan/scanning.py) and the job runner work at once, on one journal opened only when the
scan first finds work. Interrupted (`stop`), the jobs being copied get the grace period, the
rest is handed back to the journal; the next run resumes from there (COMPLETE jobs and HEAD
compares). A dry run only reads registries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from replicator.config.loading import Config
from replicator.config.sites import sites_of
from replicator.domain.events.echoes import REPLICA_USER_AGENT
from replicator.domain.jobs import JobKey, JobState
from replicator.domain.routing.scan import RunOutcome, TagAction, TagPlan, run_outcome
from replicator.engine.copier import Copier
from replicator.engine.gather import task_group
from replicator.engine.job_queue import JobEnd
from replicator.engine.pauses import sleep_until
from replicator.engine.runner import JobRunner
from replicator.logs import get_logger
from replicator.registry.pool import ClientPool
from replicator.scan.repair import RepairStream, RepairTally
from replicator.scan.run_jobs import JobTotals, RunJobs, is_denied
from replicator.scan.scanning import ScanCounts, Scanner, ScanOptions
from replicator.scan.sinks import Journaller, PlanStream

if TYPE_CHECKING:
    from replicator.journal.models import JobRow
    from replicator.scan.ledger import ClaimLedger

log = get_logger(__name__)

# How often the run looks at the journal while its jobs wait out a retry backoff or run in
# another process sharing the journal (a daemon).
WAIT_POLL_SECONDS = 1.0


@dataclass(slots=True)
class JobTally:
    """The jobs this run finished (a job observer, read by the progress line)."""

    done: int = 0
    failed: int = 0

    async def job_ended(self, end: JobEnd) -> None:
        """Count a job that reached COMPLETE (or SUPERSEDED: the source moved on) or FAILED."""
        self.done += end.state in (JobState.COMPLETE, JobState.SUPERSEDED)
        self.failed += end.state is JobState.FAILED


@dataclass(slots=True)
class BackfillReport:
    """What a run found and did."""

    counts: ScanCounts
    # Dry run: the plans not up to date, by action (each was handed to `on_plan` as found).
    planned: dict[TagAction, int] = field(default_factory=dict)
    # The run's jobs as they ended: totals per destination and some of their rows (all of a
    # run of up to REPORTED_ROWS jobs; of a larger one, those that need a look first).
    jobs: JobTotals = field(default_factory=JobTotals)
    repairs: RepairTally = field(default_factory=RepairTally)
    interrupted: bool = False
    bytes_copied: int = 0
    # Set once the run opened the journal and started its runner.
    tally: JobTally | None = None

    @property
    def rows(self) -> list[JobRow]:
        """The rows kept of the run's jobs (`jobs.unlisted` more were only counted)."""
        return self.jobs.rows

    @property
    def denied(self) -> list[JobRow]:
        """Jobs kept that the destination's policy refused."""
        return [r for r in self.rows if is_denied(r)]

    @property
    def failed(self) -> list[JobRow]:
        """Jobs kept that failed for another reason than a policy denial."""
        return [r for r in self.rows if r.state is JobState.FAILED and not is_denied(r)]

    @property
    def outcome(self) -> RunOutcome:
        """ECR's verdict over the copies and repairs (denials are reported, not failures), and
        the sources that could not be listed."""
        total = self.jobs.jobs - self.jobs.denied + self.repairs.total
        failed = self.jobs.failed + self.repairs.failed.total()
        return run_outcome(total, failed, scan_errors=len(self.counts.errors))


async def run_backfill(
    config: Config, options: ScanOptions, *, dry_run: bool = False,
    stop: asyncio.Event | None = None, report: BackfillReport | None = None,
    on_plan: Callable[[TagPlan], None] | None = None,
) -> BackfillReport:  # fmt: skip
    """Scan, journal and run to the end (or until `stop`). A dry run only reads registries,
    handing each plan not up to date to `on_plan` as it is found."""
    stop = stop or asyncio.Event()
    sites = sites_of(config)
    report = report or BackfillReport(ScanCounts())
    async with ClientPool.sized_for(
        config.workers.concurrency, user_agent=REPLICA_USER_AGENT
    ) as pool:
        if dry_run:
            stream = PlanStream(on_plan or (lambda plan: None), report.planned)
            scanner = Scanner(config, sites, pool, options, counts=report.counts)
            await scanner.run(stream, stop=stop)
            report.interrupted = stop.is_set()
            return report

        def observe(action: str, size: int) -> None:
            report.bytes_copied += size

        copier = Copier(
            concurrency=config.workers.concurrency,
            chunk_threshold=config.workers.chunk_threshold,
            on_blob=observe,
            floor=config.workers.transfer_floor,
        )

        def start(ledger: ClaimLedger) -> JobRunner:
            report.tally = tally = JobTally()
            return JobRunner(
                journal=ledger, copier=copier, pool=pool, settings=lambda: (config, sites),
                observers=[tally],
            )  # fmt: skip

        journal = JournalOnDemand(config, start)
        jobs = RunJobs(journal)
        max_deaths = config.workers.max_deaths

        async def follow(keys: Sequence[JobKey]) -> None:
            jobs.add(keys)
            if jobs.full and journal.ledger is not None:
                await _wait_for_ends(jobs, journal.ledger, stop, max_deaths, at_most=jobs.window)

        try:
            repairs = RepairStream(
                journal, lambda: journal.runner, workers=config.workers.concurrency, stop=stop
            )
            sink = Journaller(journal, wake=journal.wake, repairs=repairs, journalled=follow)
            scanner = Scanner(config, sites, pool, options, journal=journal, counts=report.counts)
            async with repairs:
                await _scan_while_running(scanner, sink, journal, stop)
                report.interrupted = stop.is_set()
                if journal.ledger is None or journal.runner is None:
                    return report  # everything was up to date: nothing to journal, nothing to run
                ledger, runner = journal.ledger, journal.runner

                async def run_until_idle() -> None:
                    await runner.run(stop, until_idle=True)

                await _wait_for_ends(jobs, ledger, stop, max_deaths, run=run_until_idle)
            report.repairs = repairs.tally
            if stop.is_set():
                report.interrupted = True
                await runner.drain(config.workers.grace_period)
                released = await ledger.release(config.workers.max_attempts)
                log.warning("backfill_interrupted", released=released)
            await jobs.close()
            report.jobs = jobs.totals
        finally:
            await journal.close()
    return report


class JournalOnDemand:
    """The run's journal, opened when the scan first finds something to journal.

    A no-op pass over a replicated source then never imports SQLAlchemy nor opens the database:
    that was a third of its time. Opening also queues a killed run's orphans again and creates
    the job runner (`start`), which `_scan_while_running` starts at once.
    """

    def __init__(self, config: Config, start: Callable[[ClaimLedger], JobRunner]) -> None:
        self._config = config
        self._start = start
        self._lock = asyncio.Lock()
        self.ledger: ClaimLedger | None = None
        self.runner: JobRunner | None = None
        self.opened = asyncio.Event()

    async def get(self) -> ClaimLedger:
        """The open journal, opening it on first use."""
        async with self._lock:
            if self.ledger is None:
                # Imported here: SQLAlchemy is loaded only once there is something to journal.
                from replicator.scan.ledger import ClaimLedger

                workers = self._config.workers
                ledger = await ClaimLedger.open_for_run(
                    self._config.journal.url,
                    max_deaths=workers.max_deaths,
                    orphan_after=workers.orphan_after,
                )
                self.ledger, self.runner = ledger, self._start(ledger)
                self.opened.set()
            return self.ledger

    def wake(self) -> None:
        """Tell the runner new jobs were journalled."""
        if self.runner is not None:
            self.runner.wake()

    async def status(
        self,
        source: str | None,
        repository: str,
        *,
        digest: str | None = None,
        tag: str | None = None,
    ) -> list[JobRow]:
        """Journal.status, on the journal opened now if need be."""
        ledger = await self.get()
        return await ledger.journal.status(source, repository, digest=digest, tag=tag)

    async def tag_jobs(
        self,
        source: str | None,
        repository: str,
        tags: Sequence[str],
        digests: Sequence[str] = (),
    ) -> list[JobRow]:
        """Journal.tag_jobs, on the journal opened now if need be."""
        ledger = await self.get()
        return await ledger.journal.tag_jobs(source, repository, tags, digests)

    async def add_jobs(
        self,
        keys: Sequence[JobKey],
        *,
        pushed_at: datetime | None = None,
        denied: Mapping[JobKey, str] | None = None,
    ) -> int:
        """Journal.add_jobs, on the journal opened now if need be."""
        ledger = await self.get()
        return await ledger.journal.add_jobs(keys, pushed_at=pushed_at, denied=denied)

    async def close(self) -> None:
        """Close the journal if it was opened."""
        if self.ledger is not None:
            await self.ledger.close()


async def _scan_while_running(
    scanner: Scanner, sink: Journaller, journal: JournalOnDemand, stop: asyncio.Event
) -> None:
    """Scan with the runner working, from the first journalled job on, on the jobs the scan
    journals."""
    scanned = asyncio.Event()

    async def relay_stop() -> None:
        await stop.wait()
        scanned.set()
        journal.wake()

    async def run_jobs() -> None:
        await sleep_until(None, journal.opened, scanned)
        if journal.runner is not None:
            await journal.runner.run(scanned)

    async with task_group() as group:
        relay = group.create_task(relay_stop())
        group.create_task(run_jobs())
        try:
            await scanner.run(sink, stop=stop)
        finally:
            scanned.set()
            journal.wake()
            relay.cancel()


async def _wait_for_ends(
    jobs: RunJobs,
    ledger: ClaimLedger,
    stop: asyncio.Event,
    max_deaths: int,
    *,
    at_most: int = 0,
    run: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Wait until at most `at_most` of the run's jobs are neither COMPLETE nor FAILED (with
    `run`, running the runner until idle first each round), waiting out retry backoffs and
    jobs another process sharing the journal is running (taking them back if it dies)."""
    while not stop.is_set():
        if run is not None:
            await run()
            if stop.is_set():
                return
        open_rows = await jobs.settle()
        if len(open_rows) <= at_most:
            return
        # Another process holding some may have died since (a daemon killed on this host):
        # its jobs then come back, to be run here.
        held_elsewhere = any(
            r.state is JobState.IN_PROGRESS and r.id not in ledger.held for r in open_rows
        )
        if held_elsewhere and await ledger.resume_orphans(max_deaths):
            continue
        wait = WAIT_POLL_SECONDS
        if run is not None:
            # The runner went idle: what is left waits out a backoff (or runs elsewhere). While
            # the scan runs, the runner works through due jobs and the poll is the pace: a due
            # time in the past there made this read the window's rows every 10 ms.
            due = min((r.next_attempt_at for r in open_rows if r.next_attempt_at), default=None)
            if due is not None:
                wait = min(wait, max(0.01, (due - datetime.now(UTC)).total_seconds()))
        await sleep_until(wait, stop)
