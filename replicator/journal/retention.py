"""Retention: events and finished jobs older than the retention are deleted, a batch at a time.

Without it the journal grows with every message for ever. Only what no longer matters goes:
events (the record of a received message, needed only to tell a redelivery from a new message,
which a broker does within minutes) and jobs in a final state (COMPLETE, FAILED). Unfinished
jobs are the queue and are never pruned. Each call deletes at most `limit` rows of each table in
one short transaction, so the daemon's intake and claims are never held up for long.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, bindparam, delete, select
from sqlmodel import Session

from replicator.domain.jobs import TERMINAL_STATES
from replicator.journal import own_writes, upload_sessions
from replicator.journal.models import EventRecord
from replicator.journal.queries import JOBS

_EVENTS: Table = EventRecord.metadata.tables["events"]
_FINISHED = [state.value for state in TERMINAL_STATES]

_OLD_EVENTS = (
    select(_EVENTS.c.id)
    .where(_EVENTS.c.received_at < bindparam("before"))
    .order_by(_EVENTS.c.id)
    .limit(bindparam("limit"))
)
_PRUNE_EVENTS = delete(_EVENTS).where(_EVENTS.c.id.in_(_OLD_EVENTS.scalar_subquery()))
_OLD_JOBS = (
    select(JOBS.c.id)
    .where(JOBS.c.state.in_(_FINISHED), JOBS.c.finished_at < bindparam("before"))
    .order_by(JOBS.c.id)
    .limit(bindparam("limit"))
)
# The state is checked again by the DELETE itself: a job retried (FAILED -> PENDING) by another
# process between the two is work again, and stays.
_PRUNE_JOBS = delete(JOBS).where(
    JOBS.c.id.in_(_OLD_JOBS.scalar_subquery()), JOBS.c.state.in_(_FINISHED)
)


@dataclass(frozen=True, slots=True)
class Pruned:
    """Rows one pruning batch deleted."""

    events: int
    jobs: int
    writes: int = 0  # the daemon's own writes (own_writes), long past their echoes
    uploads: int = 0  # uploads under way (upload_sessions) no registry keeps that long

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(
            self.events + other.events,
            self.jobs + other.jobs,
            self.writes + other.writes,
            self.uploads + other.uploads,
        )


def prune(session: Session, before: datetime, limit: int) -> Pruned:
    """Delete up to `limit` events received before `before`, up to `limit` COMPLETE or
    FAILED jobs finished before it (aware UTC), up to `limit` own writes made before it and up
    to `limit` uploads under way last kept before it; how many of each."""
    params = {"before": before, "limit": limit}
    connection = session.connection()
    events = connection.execute(_PRUNE_EVENTS, params).rowcount
    jobs = connection.execute(_PRUNE_JOBS, params).rowcount
    writes = own_writes.prune(session, before, limit)
    return Pruned(events, jobs, writes, upload_sessions.prune(session, before, limit))
