"""What the runner and the metrics read of the job queue: jobs per state and destination, the
backlog, the push time of the oldest unfinished job per destination (the RPO) and when the next
job is due. One transaction each, on the session the Journal gives (see store.py).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import Session

from replicator.domain.jobs import JobState
from replicator.journal.models import from_db_time
from replicator.journal.queries import CLAIMABLE, JOBS

# Read by the runner whenever it goes idle, and by the metrics: built once (see jobs.py).
NEXT_DUE = select(func.min(JOBS.c.next_attempt_at)).where(JOBS.c.state.in_(CLAIMABLE))
BACKLOG = select(func.count()).select_from(JOBS).where(JOBS.c.state.in_(CLAIMABLE))
COUNTS = select(JOBS.c.state, JOBS.c.destination, func.count()).group_by(
    JOBS.c.state, JOBS.c.destination
)
# Jobs still to do: waiting, backing off or being copied (not COMPLETE, not FAILED).
UNFINISHED = [*CLAIMABLE, JobState.IN_PROGRESS.value]
OLDEST_PUSHES = (
    select(JOBS.c.destination, func.min(JOBS.c.pushed_at))
    .where(JOBS.c.state.in_(UNFINISHED), JOBS.c.pushed_at.is_not(None))
    .group_by(JOBS.c.destination)
)


def counts(session: Session) -> dict[tuple[JobState, str], int]:
    """Jobs per (state, destination)."""
    rows = session.connection().execute(COUNTS).all()
    return {(JobState(state), destination): count for state, destination, count in rows}


def oldest_unreplicated(session: Session) -> dict[str, datetime]:
    """Per destination, the push time of the oldest job not yet finished."""
    rows = session.connection().execute(OLDEST_PUSHES).all()
    return {
        destination: moment
        for destination, pushed in rows
        if (moment := from_db_time(pushed)) is not None
    }


def backlog(session: Session) -> int:
    """Jobs waiting for a worker: PENDING plus RETRY_WAIT (due or not)."""
    count: int = session.connection().execute(BACKLOG).scalar_one()
    return count


def next_due_at(session: Session) -> datetime | None:
    """When the next job becomes claimable; None if none."""
    return from_db_time(session.connection().execute(NEXT_DUE).scalar_one())
