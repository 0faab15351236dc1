"""The journal of one `replicator backfill` run: remembers what this process holds and finished."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any

from replicator.domain.jobs import JobState
from replicator.journal.claimers import resume_orphans
from replicator.journal.models import JobRow
from replicator.journal.store import Journal

# IN_PROGRESS jobs of a process on another host (or container) started longer ago than this
# are taken, when a run opens the journal, as orphans of a killed process and queued again; an
# hour is far beyond any one image copy. A killed process of this host gives its jobs back at
# once (claimers.py).
ORPHAN_AFTER_SECONDS = 3600.0
INTERRUPTED_REASON = "interrupted: the backfill stopped during the copy; the next run resumes it"


class ClaimLedger(Journal):
    """A Journal that remembers the jobs this process holds IN_PROGRESS (so an interrupted run
    hands them back, due at once) and counts the jobs it finished."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held: set[int] = set()
        self.done = 0
        self.failed = 0

    @classmethod
    async def open_for_run(cls, url: str, max_attempts: int) -> ClaimLedger:
        """Open the journal at `url` and queue again the orphans of a killed run."""
        ledger = await cls.open(url)
        assert isinstance(ledger, ClaimLedger)
        try:
            await ledger.resume_orphans(max_attempts)
        except BaseException:
            await ledger.close()
            raise
        return ledger

    async def resume_orphans(self, max_attempts: int) -> int:
        """Queue again the jobs of a killed run: at once when it ran on this host, after
        ORPHAN_AFTER_SECONDS otherwise (it may be a live process elsewhere); how many."""
        return await resume_orphans(
            self,
            started_before=datetime.now(UTC) - timedelta(seconds=ORPHAN_AFTER_SECONDS),
            max_attempts=max_attempts,
        )

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
