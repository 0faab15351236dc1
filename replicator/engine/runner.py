"""The job runner: claims due jobs from the journal and works them, bounded, until told to stop.

The daemon runs it for ever; `backfill` runs it until its jobs are done. Each finished attempt
is journalled (COMPLETE, RETRY_WAIT with a next-attempt time, or FAILED with a code and reason),
then told to the observers the caller gave (the daemon counts it and publishes a result event;
a backfill counts it).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from structlog.contextvars import bound_contextvars

from replicator.config.loading import Config
from replicator.domain import jobs as job_rules
from replicator.domain.destinations import Signal
from replicator.domain.jobs import JobKey, JobState
from replicator.domain.jobs.ends import (
    Completed,
    CopyCounters,
    Failed,
    Held,
    JobEnding,
    Superseded,
)
from replicator.domain.routing import Site
from replicator.engine.bulkheads import DestinationSlots, JobSlot
from replicator.engine.copier import Copier, CopyResult, CopyStats
from replicator.engine.destination_states import DestinationStates
from replicator.engine.job import job_endpoints, run_job
from replicator.engine.job_queue import JobEnd, JobObserver, JobQueue
from replicator.engine.journal_retry import persist
from replicator.engine.kept_uploads import KeptUploads
from replicator.engine.pauses import sleep_until
from replicator.engine.write_log import announcer
from replicator.errors import ClaimLost, JournalError, ReplicatorError
from replicator.logs import get_logger
from replicator.registry.client import RegistryClient
from replicator.registry.pool import ClientPool
from replicator.registry.wait_scope import waits_release

if TYPE_CHECKING:
    from replicator.journal.models import JobRow

log = get_logger(__name__)

# How often the dispatcher looks at the journal when nothing woke it: other processes sharing
# the journal (a fleet on PostgreSQL, a backfill beside the daemon) add jobs it is not told of.
IDLE_POLL_SECONDS = 1.0
T = TypeVar("T")


class JobRunner:
    """Claims and runs jobs; `config` and `sites` are read per job, so a reload applies."""

    def __init__(
        self,
        *,
        journal: JobQueue,
        copier: Copier,
        pool: ClientPool,
        settings: Callable[[], tuple[Config, Mapping[str, Site]]],
        observers: Sequence[JobObserver] = (),
        destinations: DestinationStates | None = None,
    ) -> None:
        self.journal = journal
        # The daemon's: jobs of an unreachable destination wait unclaimed (a backfill has none).
        self._destinations = destinations
        self._copier = copier
        self._pool = pool
        self._settings = settings
        self._observers = tuple(observers)
        self._wake = asyncio.Event()
        # Running jobs and their destinations.
        self.running: dict[asyncio.Task[None], str] = {}
        # When (time.monotonic()) the dispatcher last went round, and a job was last claimed or
        # ended: the daemon's watchdog tells a stuck runner from an idle one by them.
        self.passed_at: float | None = None
        self.progressed_at: float | None = None
        # Set once the dispatcher has gone round: it takes due jobs from now on.
        self.went_round = asyncio.Event()
        # A destination's slots go to jobs while they work, not while they wait (bulkheads).
        self.slots = DestinationSlots(
            capacity=lambda: self._settings()[0].workers.per_registry, on_release=self.wake
        )
        self._slot_of: dict[asyncio.Task[None], JobSlot] = {}
        # Jobs run outside the journal's claims (repairs, `run_outside`) by destination, and
        # the places a claim in flight has reserved: both count against `concurrency`.
        self._outside: Counter[str] = Counter()
        self._claiming = 0
        self._place_freed = asyncio.Event()

    def wake(self) -> None:
        """Look at the journal now (new jobs were recorded)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event, *, until_idle: bool = False) -> None:
        """Claim due jobs while there is room, until `stop` (or, with `until_idle`, until no job
        is due and none is running).

        A destination holds at most `workers.per_registry` working jobs at once, and one more
        claimed job in its queue (engine/bulkheads.py), so a slow or stalled destination
        cannot take every worker while another destination's jobs wait; a job waiting between
        tries gives its slot back.
        """
        while not stop.is_set():
            self.passed_at = time.monotonic()
            self.went_round.set()
            config, _ = self._settings()
            room = config.workers.concurrency - self._busy()
            working = set(self.running.values()) | set(self._outside)
            saturated = {name for name in working if self.slots.saturated(name)}
            claimed: list[JobRow] = []
            # With a destination at its limit, its due jobs wait for one of its jobs to end
            # (which wakes us), not for their due time, which has passed; so does a journal
            # that refused the claim.
            # Jobs of a destination that does not answer wait for its probe to see it back
            # (which wakes us): they are due, but claiming them would spend their attempts.
            unreachable = set(self._destinations.unreachable()) if self._destinations else set()
            hold_off = bool(saturated or unreachable)
            if room > 0:
                # The places are reserved while the claim is in flight: a job run outside the
                # journal meanwhile does not take one of them.
                self._claiming = room
                try:
                    claimed = await self.journal.claim_due(
                        room, datetime.now(UTC), skip_destinations=saturated | unreachable
                    )
                except JournalError as exc:
                    # Nothing was claimed (the transaction rolled back): try again later.
                    log.error("journal_unwritable", error=str(exc), step="claim")  # noqa: TRY400 - the message is the point
                    hold_off = True
                finally:
                    self._claiming = 0
                    self._place_freed.set()
                if claimed:
                    self.progressed_at = time.monotonic()
                for row in claimed:
                    slot = self.slots.ticket(row.destination, row.source)
                    task = asyncio.create_task(self._work(row, slot), name=f"job-{row.id}")
                    self.running[task] = row.destination
                    self._slot_of[task] = slot
                    task.add_done_callback(self._job_done)
            if until_idle and not claimed and not self.running and not hold_off:
                return
            if claimed and len(claimed) == room:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._wake.clear()
            wait = IDLE_POLL_SECONDS if hold_off else await self._idle_wait()
            await sleep_until(wait, self._wake)

    async def run_outside(self, row: JobRow) -> CopyResult:
        """Copy `row`'s image as a job of this runner would, but for a row the journal does not
        hand out (a repair of a COMPLETE job's image, scan/repair.py): within the runner's
        limits (a place of `workers.concurrency`, a slot of its destination), nothing
        journalled. Raises the copy's typed error."""
        await self._take_place(row.destination)
        slot = self.slots.ticket(row.destination, row.source)
        try:
            config, sites = self._settings()
            announce = announcer(self.journal, sites[row.destination])
            src, dst = job_endpoints(row, self._pool, config, announce)
            async with slot:
                with waits_release(slot.waiting):
                    return await run_job(
                        row,
                        copier=self._copier,
                        src=src,
                        dst=dst,
                        source=sites[row.source],
                        target=sites[row.destination],
                    )
        finally:
            slot.cancel()
            self._leave_place(row.destination)

    def _busy(self) -> int:
        """Places of `workers.concurrency` taken: claimed jobs, jobs run outside the journal,
        and a claim in flight."""
        return len(self.running) + self._claiming + self._outside.total()

    async def _take_place(self, destination: str) -> None:
        while self._busy() >= self._settings()[0].workers.concurrency:
            self._place_freed.clear()
            await self._place_freed.wait()
        self._outside[destination] += 1

    def _leave_place(self, destination: str) -> None:
        self._outside[destination] -= 1
        if self._outside[destination] <= 0:
            del self._outside[destination]
        self._place_freed.set()
        self._wake.set()

    async def drain(self, grace: float) -> None:
        """Let running jobs finish within `grace` seconds; cancel the rest (they stay
        IN_PROGRESS in the journal and are resumed at the next start)."""
        if not self.running:
            return
        _, pending = await asyncio.wait(self.running, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            log.warning("drain_cancelled_jobs", count=len(pending), grace_seconds=grace)

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self.progressed_at = time.monotonic()
        self.running.pop(task, None)
        slot = self._slot_of.pop(task, None)
        if slot is not None:
            slot.cancel()  # a task cancelled before it started leaves the queue
        self._place_freed.set()
        self._wake.set()

    async def _persist(self, write: Callable[[], Awaitable[T]]) -> T:
        """Run a journal write until it succeeds (a full disk or an unreachable database is
        waited out; the drain at shutdown cancels the wait and the job resumes at start)."""

        def failed(exc: JournalError) -> None:
            log.error("journal_unwritable", error=str(exc), step="finish")

        return await persist(write, failed=failed)

    async def _tell(self, end: JobEnd) -> None:
        for observer in self._observers:
            await observer.job_ended(end)

    async def _idle_wait(self) -> float:
        due = await self.journal.next_due_at()
        if due is None:
            return IDLE_POLL_SECONDS
        return min(IDLE_POLL_SECONDS, max(0.01, (due - datetime.now(UTC)).total_seconds()))

    async def _work(self, row: JobRow, slot: JobSlot) -> None:
        config, sites = self._settings()
        source = config.registries.get(row.source)
        target = config.registries.get(row.destination)
        started = time.monotonic()
        with bound_contextvars(
            job=row.id, source=row.source, destination=row.destination,
            repository=row.repository, digest=row.digest, tag=row.tag,
        ):  # fmt: skip
            if source is None or target is None:
                await self._finish_failed(
                    row, "CONFIG_INVALID", "registry no longer in the config", temporary=False
                )
                return
            dst_host: str | None = None
            uploads = KeptUploads(self.journal, row.destination)
            dst_client: RegistryClient | None = None
            try:
                announce = announcer(self.journal, sites[row.destination])
                src, dst = job_endpoints(row, self._pool, config, announce, uploads)
                dst_host, dst_client = dst.client.host, dst.client
                # The destination slot is held while the job works, given back while it waits
                # between tries, and before its end is journalled.
                async with slot:
                    with waits_release(slot.waiting):
                        result = await run_job(
                            row,
                            copier=self._copier,
                            src=src,
                            dst=dst,
                            source=sites[row.source],
                            target=sites[row.destination],
                        )
            except ReplicatorError as exc:
                if self._destinations is not None and not await self._destinations.attempt_failed(
                    row.destination, exc, destination_host=dst_host
                ):
                    await self._hold(row, exc)
                    return
                state = await self._finish_failed(row, exc.code, str(exc), temporary=exc.temporary)
                await self._end_kept_uploads(state, uploads, dst_client)
                return
            except Exception as exc:
                # A bug must not kill the daemon: the job is retried and the traceback logged.
                log.exception("job_crashed")
                state = await self._finish_failed(row, "INTERNAL_ERROR", repr(exc), temporary=True)
                await self._end_kept_uploads(state, uploads, dst_client)
                return
            finished = await self._finish_ok(
                row, result.stats, time.monotonic() - started, superseded=result.superseded
            )
            if finished and result.children:
                # The index's job copied its children: their own (untagged, delayed) jobs at
                # this destination are dropped before they run, so one push is one job.
                children = [
                    JobKey(row.source, row.repository, child, None, row.destination)
                    for child in result.children
                ]
                await self._persist(lambda: self.journal.supersede(children))

    async def _finish_ok(
        self, row: JobRow, stats: CopyStats, seconds: float, *, superseded: str | None
    ) -> bool:
        """Journal the job's success; whether it was ours to journal (not a lost claim)."""
        counters = CopyCounters(
            bytes_copied=stats.bytes_copied,
            blobs_copied=stats.blobs_copied,
            blobs_mounted=stats.blobs_mounted,
            blobs_skipped=stats.blobs_skipped,
        )
        ending: JobEnding = (
            Completed(counters) if superseded is None else Superseded(superseded, counters)
        )
        try:
            await self._persist(lambda: self.journal.end(row.id, ending, claimed_at=row.started_at))
        except ClaimLost as exc:
            _claim_lost(exc, "complete")
            return False
        if self._destinations is not None:
            await self._destinations.signal(row.destination, Signal.ANSWERED)
        if superseded is not None:
            log.info("job_superseded", reason=superseded, bytes=stats.bytes_copied)
            await self._tell(JobEnd(row.key, JobState.SUPERSEDED, row.pushed_at, None, superseded))
            return True
        log.info("job_complete", seconds=round(seconds, 3), bytes=stats.bytes_copied)
        await self._tell(JobEnd(row.key, JobState.COMPLETE, row.pushed_at))
        return True

    async def _hold(self, row: JobRow, exc: ReplicatorError) -> None:
        """The job's destination is known unreachable: it waits for it, the attempt not
        counted (domain.destinations.counts_attempt)."""
        held = Held(job_rules.failure_code(exc.code), str(exc))
        try:
            await self._persist(lambda: self.journal.end(row.id, held, claimed_at=row.started_at))
        except ClaimLost as lost:
            _claim_lost(lost, "hold", code=exc.code)
            return
        log.info("job_held", code=exc.code, reason=str(exc), attempts=row.attempts - 1)

    async def _finish_failed(
        self, row: JobRow, code: str, reason: str, *, temporary: bool
    ) -> JobState | None:
        """Journal a failed attempt of the error whose `.code` is `code` (FAILED, or RETRY_WAIT
        while the job has attempts left) and tell the observers; the job's new state (None: the
        claim was lost)."""
        config, _ = self._settings()
        backoff = job_rules.backoff_seconds(row.attempts, jitter_fraction=random.random())
        failed = Failed.of_error(
            code,
            reason,
            temporary=temporary,
            max_attempts=config.workers.max_attempts,
            backoff=backoff,
        )
        try:
            state = await self._persist(
                lambda: self.journal.end(
                    row.id, failed, now=datetime.now(UTC), claimed_at=row.started_at
                )
            )
        except ClaimLost as exc:
            _claim_lost(exc, "fail", code=code)
            return None
        told = failed.code
        if state is job_rules.JobState.FAILED:
            if temporary:
                # The journal records a temporary error that used the last attempt as such.
                told = job_rules.FailureCode.MAX_ATTEMPTS
                code = told.value
            log.warning("job_failed", code=code, reason=reason, attempts=row.attempts)
        else:
            log.info(
                "job_retry_wait", code=code, reason=reason, attempts=row.attempts,
                backoff=round(backoff, 2),
            )  # fmt: skip
        await self._tell(JobEnd(row.key, state, row.pushed_at, told, failed.reason))
        return state

    async def _end_kept_uploads(
        self, state: JobState | None, uploads: KeptUploads, client: RegistryClient | None
    ) -> None:
        """A job that failed for good ends the upload sessions it kept open for a next attempt
        (a waiting one keeps them to go on with)."""
        if state is JobState.FAILED and client is not None and uploads.mine:
            ended = await uploads.end_kept(client)
            log.info("kept_uploads_ended", count=ended)


def _claim_lost(exc: ClaimLost, step: str, **fields: str) -> None:
    """Log a worker's write the journal refused: the job was re-queued while this worker ran it
    (taken for an orphan) and is its new holder's to finish; nothing is reported for it here."""
    log.warning("job_claim_lost", step=step, reason=str(exc), **fields)
