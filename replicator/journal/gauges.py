"""What the runner and the metrics read of the job queue: jobs per state and destination, the
backlog, the push time of the oldest push not yet served per destination (the RPO) and when
the next job is due. One transaction each, on the session the Journal gives (see store.py).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, exists, func, or_, select
from sqlmodel import Session

from replicator.domain.jobs import FailureCode, JobState
from replicator.journal.models import NO_TAG, from_db_time
from replicator.journal.queries import CLAIMABLE, JOBS, UNFENCED

# Read by the runner whenever it goes idle, and by the metrics: built once (see queries.py).
# A delete waiting for a copy in flight (queries.UNFENCED) is not due: the copy's end wakes
# the runner, which must not poll the journal meanwhile as if a job were due.
NEXT_DUE = select(func.min(JOBS.c.next_attempt_at)).where(JOBS.c.state.in_(CLAIMABLE), UNFENCED)
BACKLOG = select(func.count()).select_from(JOBS).where(JOBS.c.state.in_(CLAIMABLE))
COUNTS = select(JOBS.c.state, JOBS.c.destination, func.count()).group_by(
    JOBS.c.state, JOBS.c.destination
)
# Jobs still to do: waiting, backing off or being copied (not COMPLETE, not FAILED).
UNFINISHED = [*CLAIMABLE, JobState.IN_PROGRESS.value]
# FAILED jobs whose failure is a decision rather than lag: the destination's policy refuses
# the image, or the source still serves what a (forged or stale) delete named.
DECIDED_FAILURES = [FailureCode.POLICY_DENIED.value, FailureCode.DELETE_REFUSED.value]
_LATER = JOBS.alias("later")
# A COMPLETE job that finished no earlier serves the same image at the same destination: the
# same tag (whatever digest it now names), or for an untagged job the same digest.
_SERVED_SINCE = exists().where(
    _LATER.c.state == JobState.COMPLETE.value,
    _LATER.c.kind == JOBS.c.kind,
    _LATER.c.source == JOBS.c.source,
    _LATER.c.repository == JOBS.c.repository,
    _LATER.c.destination == JOBS.c.destination,
    _LATER.c.finished_at >= JOBS.c.finished_at,
    or_(
        and_(JOBS.c.tag != NO_TAG, _LATER.c.tag == JOBS.c.tag),
        and_(JOBS.c.tag == NO_TAG, _LATER.c.digest == JOBS.c.digest),
    ),
)
# The recovery point: pushes not yet served at the destination. A FAILED job still counts
# (the image is missing there) until a later success serves its tag or digest.
OLDEST_PUSHES = (
    select(JOBS.c.destination, func.min(JOBS.c.pushed_at))
    .where(
        JOBS.c.pushed_at.is_not(None),
        or_(
            JOBS.c.state.in_(UNFINISHED),
            and_(
                JOBS.c.state == JobState.FAILED.value,
                JOBS.c.failure_code.not_in(DECIDED_FAILURES),
                ~_SERVED_SINCE,
            ),
        ),
    )
    .group_by(JOBS.c.destination)
)


def counts(session: Session) -> dict[tuple[JobState, str], int]:
    """Jobs per (state, destination)."""
    rows = session.connection().execute(COUNTS).all()
    return {(JobState(state), destination): count for state, destination, count in rows}


def oldest_unreplicated(session: Session) -> dict[str, datetime]:
    """Per destination, the push time of the oldest push not yet served there (see
    OLDEST_PUSHES)."""
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
