"""What the job runner (runner.py) takes and tells: the journal it claims from and ends jobs in
(JobQueue: the Journal, or a backfill's ClaimLedger), and how each attempt ended once journalled
(JobEnd, told to every JobObserver: the daemon's metrics and result events, a backfill's
tally)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from replicator.domain.events.echoes import Write
from replicator.domain.jobs import FailureCode, JobKey, JobState
from replicator.domain.jobs.ends import JobEnding
from replicator.engine.kept_uploads import Place

if TYPE_CHECKING:
    from replicator.journal.models import JobRow


@dataclass(frozen=True, slots=True)
class JobEnd:
    """How an attempt at a job ended, once journalled: COMPLETE, RETRY_WAIT, FAILED (with the
    failure's code and reason) or SUPERSEDED (with the reason)."""

    key: JobKey
    state: JobState
    pushed_at: datetime | None = None
    code: FailureCode | None = None
    reason: str | None = None


class JobObserver(Protocol):
    """Told of every job attempt the runner finished (metrics, result events, a run's tally)."""

    async def job_ended(self, end: JobEnd) -> None:
        """React to `end`; must not raise for an outage of its own (the job is journalled)."""


class JobQueue(Protocol):
    """What the runner needs of the journal: claim due jobs, record how they ended."""

    async def claim_due(
        self, limit: int, now: datetime, *, skip_destinations: Collection[str] = ()
    ) -> list[JobRow]: ...

    async def end(
        self,
        job_id: int,
        ending: JobEnding,
        *,
        now: datetime | None = None,
        claimed_at: datetime | None = None,
    ) -> JobState: ...

    async def supersede(self, keys: Sequence[JobKey]) -> int: ...

    async def next_due_at(self) -> datetime | None: ...

    async def record_writes(self, writes: Sequence[Write]) -> None: ...

    async def keep_upload(self, place: Place, location: str, offset: int) -> None: ...

    async def kept_upload(self, place: Place) -> tuple[str, int] | None: ...

    async def forget_upload(self, place: Place) -> None: ...
