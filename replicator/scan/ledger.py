"""The journal of one `replicator backfill` run: remembers the jobs this process holds."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta

from replicator.domain.events.echoes import Write
from replicator.domain.jobs import FailureCode, JobKey, JobState
from replicator.domain.jobs.ends import Failed, JobEnding
from replicator.errors import ClaimLost
from replicator.journal.claimers import open_journal, resume_orphans
from replicator.journal.models import JobRow
from replicator.journal.store import Journal

INTERRUPTED_REASON = "interrupted: the backfill stopped during the copy; the next run resumes it"


class ClaimLedger:
    """The journal as a run's job runner uses it (claims and finishes go through to `journal`),
    remembering the jobs this process holds IN_PROGRESS so an interrupted run hands them back,
    due at once."""

    def __init__(self, journal: Journal, *, orphan_after: float) -> None:
        self.journal = journal
        self.held: set[int] = set()
        self._orphan_after = orphan_after

    @classmethod
    async def open_for_run(cls, url: str, *, max_deaths: int, orphan_after: float) -> ClaimLedger:
        """Open the journal at `url` and queue again the orphans of a killed run."""
        ledger = cls(await open_journal(url), orphan_after=orphan_after)
        try:
            await ledger.resume_orphans(max_deaths)
        except BaseException:
            await ledger.journal.close()
            raise
        return ledger

    async def resume_orphans(self, max_deaths: int) -> int:
        """Queue again the jobs of a killed run: at once when it ran on this host, once claimed
        longer ago than the orphan window ([workers] orphan_after) otherwise (it may be a live
        process elsewhere); how many."""
        return await resume_orphans(
            self.journal,
            started_before=datetime.now(UTC) - timedelta(seconds=self._orphan_after),
            max_deaths=max_deaths,
        )

    async def claim_due(
        self, limit: int, now: datetime, *, skip_destinations: Collection[str] = ()
    ) -> list[JobRow]:
        """Claim as the journal does, remembering the claimed ids."""
        rows = await self.journal.claim_due(limit, now, skip_destinations=skip_destinations)
        self.held.update(row.id for row in rows)
        return rows

    async def end(
        self,
        job_id: int,
        ending: JobEnding,
        *,
        now: datetime | None = None,
        claimed_at: datetime | None = None,
    ) -> JobState:
        """End an attempt as the journal does; the job is no longer held (also when the
        journal refused, the claim lost)."""
        try:
            return await self.journal.end(job_id, ending, now=now, claimed_at=claimed_at)
        finally:
            self.held.discard(job_id)

    async def supersede(self, keys: Sequence[JobKey]) -> int:
        """Drop still PENDING jobs of `keys`, as the journal does."""
        return await self.journal.supersede(keys)

    async def next_due_at(self) -> datetime | None:
        """When the journal's next job is due."""
        return await self.journal.next_due_at()

    async def record_writes(self, writes: Sequence[Write]) -> None:
        """Record the writes a job is about to make, as the journal does."""
        await self.journal.record_writes(writes)

    async def keep_upload(self, place: tuple[str, str, str], location: str, offset: int) -> None:
        """Keep an upload under way, as the journal does (a killed run's goes on next run)."""
        await self.journal.keep_upload(place, location, offset)

    async def kept_upload(self, place: tuple[str, str, str]) -> tuple[str, int] | None:
        """An upload kept under way, as the journal has it."""
        return await self.journal.kept_upload(place)

    async def forget_upload(self, place: tuple[str, str, str]) -> None:
        """Forget an upload under way, as the journal does."""
        await self.journal.forget_upload(place)

    async def release(self, max_attempts: int) -> int:
        """Hand back every job still held (RETRY_WAIT, due now); how many."""
        held = sorted(self.held)
        interrupted = Failed(
            FailureCode.INTERRUPTED, INTERRUPTED_REASON, temporary=True,
            max_attempts=max_attempts, backoff=0.0,
        )  # fmt: skip
        for job_id in held:
            # A job re-queued by a peer meanwhile is its holder's now: nothing to hand back.
            with contextlib.suppress(ClaimLost):
                await self.end(job_id, interrupted)
        return len(held)

    async def close(self) -> None:
        """Close the journal."""
        await self.journal.close()
