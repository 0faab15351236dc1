"""Retention: events and finished jobs older than the retention are deleted, a batch at a time.

Without it the journal grows with every message for ever. Only what no longer matters goes:
events (the record of a received message, needed only to tell a redelivery from a new message,
which a broker does within minutes) and jobs in a final state (COMPLETE, FAILED, SUPERSEDED).
Unfinished jobs are the queue and are never pruned. On a route whose destination replicates
back to its source (active-active), the newest job of each place — kind, source, destination,
repository and tag (or digest, untagged) — is kept however old, and so is the newest COMPLETE
one: they are the daemon's record of who wrote each tag last, which the scan's hold reads
(domain.routing.scan.hold_newer). Pruning them made a reconcile pass, a month after a tag's
replication, take the replica for the newer write and copy it back over a fresh push whose
event was not in yet (test_active_active::TestPastTheRetention). They are one row per tag (or
untagged image) ever written on such a route; one-way routes keep nothing past the retention.
Each call examines at most `limit` old jobs (from `after_job`, by id) and deletes at most
`limit` rows of each table in one short transaction, so the daemon's intake and claims are
never held up for long.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, Table, and_, bindparam, delete, exists, not_, or_, select
from sqlalchemy.sql.selectable import NamedFromClause
from sqlmodel import Session

from replicator.domain.jobs import TERMINAL_STATES, JobState
from replicator.journal import own_writes, upload_sessions
from replicator.journal.models import NO_TAG, EventRecord
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
    .where(
        JOBS.c.state.in_(_FINISHED),
        JOBS.c.finished_at < bindparam("before"),
        JOBS.c.id > bindparam("after"),
    )
    .order_by(JOBS.c.id)
    .limit(bindparam("limit"))
)


def _newer_of_the_same_place(other: NamedFromClause) -> ColumnElement[bool]:
    """`other` is a later job (by id) of the same place as the job being pruned: kind, route,
    repository, and tag, or digest for an untagged one."""
    same_tag = and_(JOBS.c.tag != NO_TAG, other.c.tag == JOBS.c.tag)
    same_untagged = and_(
        JOBS.c.tag == NO_TAG, other.c.tag == NO_TAG, other.c.digest == JOBS.c.digest
    )
    return and_(
        other.c.repository == JOBS.c.repository,
        other.c.kind == JOBS.c.kind,
        other.c.source == JOBS.c.source,
        other.c.destination == JOBS.c.destination,
        other.c.id > JOBS.c.id,
        or_(same_tag, same_untagged),
    )


_NEWER, _NEWER_COMPLETE = JOBS.alias("newer"), JOBS.alias("newer_complete")
_REPLACED = and_(
    exists().where(_newer_of_the_same_place(_NEWER)),
    or_(
        JOBS.c.state != JobState.COMPLETE.value,
        exists().where(
            _newer_of_the_same_place(_NEWER_COMPLETE),
            _NEWER_COMPLETE.c.state == JobState.COMPLETE.value,
        ),
    ),
)
# The state is checked again by the DELETE itself: a job retried (FAILED -> PENDING) by another
# process between the two is work again, and stays.
_ROUTE = JOBS.c.source + "\n" + JOBS.c.destination
_PRUNE_JOBS = delete(JOBS).where(
    JOBS.c.id.in_(bindparam("ids", expanding=True)),
    JOBS.c.state.in_(_FINISHED),
    or_(not_(_ROUTE.in_(bindparam("returning", expanding=True))), _REPLACED),
)


@dataclass(frozen=True, slots=True)
class Pruned:
    """Rows one pruning batch deleted."""

    events: int
    jobs: int
    writes: int = 0  # the daemon's own writes (own_writes), long past their echoes
    uploads: int = 0  # uploads under way (upload_sessions) no registry keeps that long
    # Old finished jobs looked at (pruned or kept as their place's newest), and the last one's
    # id: the next batch goes on after it.
    jobs_examined: int = field(default=0, compare=False)
    job_cursor: int = field(default=0, compare=False)

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(
            self.events + other.events,
            self.jobs + other.jobs,
            self.writes + other.writes,
            self.uploads + other.uploads,
            self.jobs_examined + other.jobs_examined,
            max(self.job_cursor, other.job_cursor),
        )


def prune(
    session: Session,
    before: datetime,
    limit: int,
    after_job: int = 0,
    returning: Collection[tuple[str, str]] = (),
) -> Pruned:
    """Delete up to `limit` events received before `before`; of the next `limit` finished jobs
    past id `after_job` that finished before it (aware UTC), those of a route not in
    `returning` (domain.routing.returning_routes) and those a newer job of their place
    replaced; up to `limit` own writes made before it and up to `limit` uploads under way last
    kept before it. How many of each, and how far the jobs were examined."""
    params = {"before": before, "limit": limit}
    connection = session.connection()
    events = connection.execute(_PRUNE_EVENTS, params).rowcount
    ids = list(connection.execute(_OLD_JOBS, {**params, "after": after_job}).scalars())
    routes = [f"{source}\n{destination}" for source, destination in sorted(returning)]
    pruning = {"ids": ids, "returning": routes}
    jobs = connection.execute(_PRUNE_JOBS, pruning).rowcount if ids else 0
    writes = own_writes.prune(session, before, limit)
    uploads = upload_sessions.prune(session, before, limit)
    return Pruned(events, jobs, writes, uploads, len(ids), ids[-1] if ids else after_job)
