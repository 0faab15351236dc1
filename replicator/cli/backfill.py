"""`replicator backfill`: replicate what already exists, through the journal and the same workers.

Scans the sources (replicator/backfill.py), journals a job per tag missing or different at a
destination, runs the jobs in-process until each is COMPLETE or FAILED (a daemon on the same
journal shares them), then prints a summary. `--dry-run` prints the plan and writes nothing.
Interrupted (Ctrl-C, SIGTERM), the jobs being copied get the grace period, the rest is handed
back to the journal; the next run resumes from there (COMPLETE jobs and HEAD compares).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from replicator.backfill import (
    Journaller,
    RepairResult,
    ScanCounts,
    Scanner,
    ScanOptions,
    job_rows,
    repair,
)
from replicator.cli.backfill_output import (
    print_plan,
    print_summary,
    progress,
    progress_line,
)
from replicator.config import Config, load_config
from replicator.copier import Copier
from replicator.domain.jobs import FailureCode, JobKey, JobState
from replicator.domain.routing import Site
from replicator.domain.scan import RunOutcome, TagAction, TagPlan, run_outcome
from replicator.errors import UsageError
from replicator.journal.models import JobRow
from replicator.journal.store import Journal
from replicator.logs import get_logger
from replicator.registry.pool import ClientPool
from replicator.runner import JobRunner

log = get_logger(__name__)

# IN_PROGRESS jobs started longer ago than this are taken, at a backfill's start, as orphans of a
# killed process (kill -9, power loss) and queued again; an hour is far beyond any one image copy.
ORPHAN_AFTER_SECONDS = 3600.0
# How often the run looks at the journal while its jobs wait out a retry backoff or run in
# another process sharing the journal (a daemon).
WAIT_POLL_SECONDS = 1.0
INTERRUPTED_REASON = "interrupted: the backfill stopped during the copy; the next run resumes it"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `backfill` subcommand."""
    parser = subparsers.add_parser(
        "backfill",
        help="replicate images that already exist at the sources",
        description="Enumerate the source registries, compare every tag the rules select with "
        "each destination (HEAD), journal a job for what is missing or different and run the "
        "jobs. Exit 1 when a job failed.",
    )
    parser.add_argument("--source", metavar="NAME", help="only this source registry")
    parser.add_argument("--destination", metavar="NAME", help="only this destination registry")
    parser.add_argument(
        "--repository-prefix", default="", metavar="P", help="only repositories P or P/..."
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan; write nothing anywhere"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument(
        "--config", metavar="FILE",
        help="config file (default: $REPLICATOR_CONFIG, else /etc/replicator/replicator.toml)",
    )  # fmt: skip
    parser.set_defaults(func=run)


class ClaimLedger(Journal):
    """A Journal that remembers the jobs this process holds IN_PROGRESS (so an interrupted run
    hands them back, due at once) and counts the jobs it finished."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held: set[int] = set()
        self.done = 0
        self.failed = 0

    async def claim_due(
        self, limit: int, now: datetime, *, skip_destinations: Collection[str] = ()
    ) -> list[JobRow]:
        """Claim as Journal does, remembering the claimed ids."""
        rows = await super().claim_due(limit, now, skip_destinations=skip_destinations)
        self.held.update(row.id for row in rows)
        return rows

    async def complete(self, job_id: int, **counters: Any) -> None:
        """Complete as Journal does; the job is no longer held."""
        await super().complete(job_id, **counters)
        self.held.discard(job_id)
        self.done += 1

    async def fail(self, job_id: int, **details: Any) -> JobState:
        """Fail as Journal does; the job is no longer held."""
        state = await super().fail(job_id, **details)
        self.held.discard(job_id)
        self.failed += state is JobState.FAILED
        return state

    async def release(self, max_attempts: int) -> int:
        """Hand back every job still held (RETRY_WAIT, due now); how many."""
        held = sorted(self.held)
        for job_id in held:
            await self.fail(
                job_id, code="INTERRUPTED", reason=INTERRUPTED_REASON, temporary=True,
                max_attempts=max_attempts, now=datetime.now(UTC), backoff=0.0,
            )  # fmt: skip
        return len(held)


@dataclass(slots=True)
class BackfillReport:
    """What a run found and did."""

    counts: ScanCounts
    plans: list[TagPlan] = field(default_factory=list)  # dry run: everything not up to date
    rows: list[JobRow] = field(default_factory=list)  # the run's jobs as they ended
    repairs: list[RepairResult] = field(default_factory=list)
    interrupted: bool = False
    bytes_copied: int = 0
    ledger: ClaimLedger | None = None

    @property
    def denied(self) -> list[JobRow]:
        """Jobs the destination's policy refused."""
        return [r for r in self.rows if r.failure_code == FailureCode.POLICY_DENIED]

    @property
    def failed(self) -> list[JobRow]:
        """Jobs that failed for another reason than a policy denial."""
        return [
            r
            for r in self.rows
            if r.state is JobState.FAILED and r.failure_code != FailureCode.POLICY_DENIED
        ]

    @property
    def outcome(self) -> RunOutcome:
        """ECR's verdict over the copies and repairs (denials are reported, not failures)."""
        total = len(self.rows) - len(self.denied) + len(self.repairs)
        failed = len(self.failed) + sum(1 for r in self.repairs if r.error)
        return run_outcome(total, failed)


class PlanCollector:
    """The sink of a dry run: keeps every plan that is not up to date."""

    def __init__(self) -> None:
        self.plans: list[TagPlan] = []

    async def __call__(self, source: Site, repository: str, plans: Sequence[TagPlan]) -> None:
        self.plans.extend(p for p in plans if p.action is not TagAction.UP_TO_DATE)


async def run_backfill(
    config: Config, options: ScanOptions, *, dry_run: bool = False,
    stop: asyncio.Event | None = None, report: BackfillReport | None = None,
) -> BackfillReport:  # fmt: skip
    """Scan, journal and run to the end (or until `stop`). A dry run only reads registries."""
    from replicator.metrics import Metrics
    from replicator.sites import sites_of

    stop = stop or asyncio.Event()
    sites = sites_of(config)
    report = report or BackfillReport(ScanCounts())
    async with ClientPool(max_connections=max(64, config.workers.concurrency * 4)) as pool:
        if dry_run:
            collector = PlanCollector()
            scanner = Scanner(config, sites, pool, options, counts=report.counts)
            await scanner.run(collector, stop=stop)
            report.plans, report.interrupted = collector.plans, stop.is_set()
            return report

        def observe(action: str, size: int) -> None:
            report.bytes_copied += size

        journal = await ClaimLedger.open(config.journal.url)
        assert isinstance(journal, ClaimLedger)
        report.ledger = journal
        try:
            await journal.resume_interrupted(
                started_before=datetime.now(UTC) - timedelta(seconds=ORPHAN_AFTER_SECONDS),
                max_attempts=config.workers.max_attempts,
            )
            copier = Copier(
                concurrency=config.workers.concurrency,
                chunk_threshold=config.workers.chunk_threshold,
                on_blob=observe,
            )
            runner = JobRunner(
                journal=journal, copier=copier, pool=pool, metrics=Metrics(),
                settings=lambda: (config, sites),
            )  # fmt: skip
            sink = Journaller(journal, wake=runner.wake)
            scanner = Scanner(config, sites, pool, options, journal=journal, counts=report.counts)
            await _scan_while_running(scanner, sink, runner, stop)
            await _wait_for_jobs(runner, journal, sink.keys, stop)
            if not stop.is_set():
                report.repairs = await repair(
                    sink.repairs, journal=journal, config=config, sites=sites, pool=pool,
                    copier=copier,
                )  # fmt: skip
            if stop.is_set():
                report.interrupted = True
                await runner.drain(config.workers.grace_period)
                released = await journal.release(config.workers.max_attempts)
                log.warning("backfill_interrupted", released=released)
            report.rows = await job_rows(journal, sink.keys)
        finally:
            await journal.close()
    return report


async def _scan_while_running(
    scanner: Scanner, sink: Journaller, runner: JobRunner, stop: asyncio.Event
) -> None:
    """Scan with the runner already working on the jobs the scan journals."""
    scanned = asyncio.Event()

    async def relay_stop() -> None:
        await stop.wait()
        scanned.set()
        runner.wake()

    async with asyncio.TaskGroup() as group:
        relay = group.create_task(relay_stop())
        group.create_task(runner.run(scanned))
        try:
            await scanner.run(sink, stop=stop)
        finally:
            scanned.set()
            runner.wake()
            relay.cancel()


async def _wait_for_jobs(
    runner: JobRunner,
    journal: Journal,
    keys: Mapping[tuple[str, str], Sequence[JobKey]],
    stop: asyncio.Event,
) -> None:
    """Run until every job of this run is COMPLETE or FAILED, waiting out retry backoffs and
    jobs another process sharing the journal is running."""
    finished = {JobState.COMPLETE, JobState.FAILED}
    while not stop.is_set():
        await runner.run(stop, until_idle=True)
        if stop.is_set() or not keys:
            return
        open_rows = [r for r in await job_rows(journal, keys) if r.state not in finished]
        if not open_rows:
            return
        due = min((r.next_attempt_at for r in open_rows if r.next_attempt_at), default=None)
        wait = WAIT_POLL_SECONDS
        if due is not None:
            wait = min(wait, max(0.01, (due - datetime.now(UTC)).total_seconds()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await stop.wait()


# -- the command ----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Handle `replicator backfill`."""
    config = load_config(args.config)
    options = ScanOptions(args.source, args.destination, args.repository_prefix)
    for name, flag in ((args.source, "--source"), (args.destination, "--destination")):
        if name is not None and name not in config.registries:
            raise UsageError(f"{flag} {name!r} names no registry of {config.path}")
    started = time.monotonic()
    report = asyncio.run(_main(config, options, dry_run=args.dry_run))
    seconds = time.monotonic() - started
    out = sys.stdout
    if args.dry_run:
        print_plan(report, seconds, as_json=args.json, out=out)
        return 1 if report.counts.errors or report.interrupted else 0
    print_summary(report, seconds, as_json=args.json, out=out)
    clean = report.outcome is RunOutcome.COMPLETE and not report.counts.errors
    return 0 if clean and not report.interrupted else 1


async def _main(config: Config, options: ScanOptions, *, dry_run: bool) -> BackfillReport:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    report = BackfillReport(ScanCounts())
    drawing = (
        asyncio.create_task(progress(report, stop, sys.stderr)) if sys.stderr.isatty() else None
    )
    try:
        return await run_backfill(config, options, dry_run=dry_run, stop=stop, report=report)
    finally:
        if drawing is not None:
            drawing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drawing
            sys.stderr.write(f"\r{progress_line(report)}\n")
