"""The `jobs` table's statements, in SQLAlchemy Core and built once, and the reads on them.

A job's transitions are the journal's hot path (several per copied image). Building an ORM
statement and loading a record cost about 2.5 ms of CPU per transition, against 0.4 ms for a
prepared Core statement run on the session's connection: CPU the copies running beside the
journal's thread need (measured on a cold backfill, bench/backfill_bench.py).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Row,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlmodel import Session

from replicator.domain.jobs import CLAIMABLE_STATES, TERMINAL_STATES, JobKey, JobKind, JobState
from replicator.errors import JournalError
from replicator.journal.models import DEATHS_KEY, NO_TAG, JobRecord, JobRow, MetaRecord

JOBS: Table = JobRecord.metadata.tables["jobs"]
CLAIMABLE = [state.value for state in CLAIMABLE_STATES]
# Columns a new job row is inserted with (the id comes from the database).
INSERTED_COLUMNS = tuple(column.name for column in JOBS.columns if column.name != "id")

# The statements below bind their values as parameters, so SQLAlchemy compiles each once.
# An image at a destination (a key without its origin), whichever events asked for it.
IMAGE_WHERE = and_(
    JOBS.c.kind == bindparam("k_kind"),
    JOBS.c.source == bindparam("k_source"),
    JOBS.c.repository == bindparam("k_repository"),
    JOBS.c.digest == bindparam("k_digest"),
    JOBS.c.tag == bindparam("k_tag"),
    JOBS.c.destination == bindparam("k_destination"),
)
KEY_WHERE = and_(IMAGE_WHERE, JOBS.c.origin == bindparam("k_origin"))
FIND = select(JOBS.c.id, JOBS.c.state).where(KEY_WHERE)
# The oldest job of an image not yet finished, whichever event made it.
FIND_UNFINISHED = (
    select(JOBS.c.id, JOBS.c.state)
    .where(IMAGE_WHERE, JOBS.c.state.not_in([state.value for state in TERMINAL_STATES]))
    .order_by(JOBS.c.id)
    .limit(1)
)
_META = MetaRecord.metadata.tables["meta"]
_DEATHS_ROW = _META.c.key == DEATHS_KEY
DEATHS_FOR_UPDATE = select(_META.c.value).where(_DEATHS_ROW).with_for_update()
SET_DEATHS = update(_META).where(_DEATHS_ROW).values(value=bindparam("value"))


def orphans_statement(scope: Any) -> Select[Any]:
    """The IN_PROGRESS jobs in `scope` with what a death decision needs."""
    columns = (JOBS.c.id, JOBS.c.attempts, JOBS.c.deaths, JOBS.c.last_death)
    return select(*columns).where(JOBS.c.state == JobState.IN_PROGRESS.value, scope)


BY_ID = select(JOBS.c.id, JOBS.c.state, JOBS.c.attempts).where(JOBS.c.id == bindparam("job_id"))
ROWS_BY_IDS = (
    select(JOBS).where(JOBS.c.id.in_(bindparam("ids", expanding=True))).order_by(JOBS.c.id)
)
INSERT = insert(JOBS)
# The PENDING jobs of an image, whichever events made them.
DELETE_PENDING = delete(JOBS).where(IMAGE_WHERE, JOBS.c.state == JobState.PENDING.value)
CLAIM = (
    update(JOBS)
    .where(JOBS.c.id == bindparam("job_id"), JOBS.c.state == bindparam("old_state"))
    .values(
        state=bindparam("new_state"),
        attempts=JOBS.c.attempts + 1,
        next_attempt_at=None,
        started_at=bindparam("now"),
        finished_at=None,
        updated_at=bindparam("now"),
        claimed_by=bindparam("claimer"),
    )
)
IN_PROGRESS_CLAIMERS = (
    select(JOBS.c.claimed_by).where(JOBS.c.state == JobState.IN_PROGRESS.value).distinct()
)


def key_params(key: JobKey) -> dict[str, str]:
    """The parameters of KEY_WHERE (and FIND) for `key`, which IMAGE_WHERE ignores the
    origin of."""
    return {
        "k_kind": key.kind.value,
        "k_source": key.source,
        "k_repository": key.repository,
        "k_digest": key.digest,
        "k_tag": key.tag or NO_TAG,
        "k_destination": key.destination,
        "k_origin": key.origin,
    }


def execute(session: Session, statement: Any, params: Any = None) -> CursorResult[Any]:
    """Run a Core statement on the session's connection (in its transaction), past the ORM."""
    return cast(CursorResult[Any], session.connection().execute(statement, params))


def find(session: Session, key: JobKey) -> Row[Any] | None:
    """The id and state of the job of `key`, if recorded."""
    return execute(session, FIND, key_params(key)).first()


def find_unfinished(session: Session, key: JobKey) -> Row[Any] | None:
    """The id and state of a job of `key`'s image not yet finished, of any origin."""
    return execute(session, FIND_UNFINISHED, key_params(key)).first()


def rows(
    session: Session, statement: Select[Any], params: Mapping[str, Any] | None = None
) -> list[JobRow]:
    """The JobRows a SELECT of whole `jobs` rows returns."""
    return [JobRow.from_record(row) for row in execute(session, statement, params)]


@functools.cache
def image_statement(*, narrowed: tuple[str, ...], newest: bool = False) -> Select[Any]:
    """The jobs of the repository bound as `repository`, narrowed to the values bound under
    the `narrowed` column names (source, tag, digest); only the newest one with `newest`,
    a SUPERSEDED one only when no other matches (the source had moved on past its digest)."""
    statement = select(JOBS).where(JOBS.c.repository == bindparam("repository"))
    for name in narrowed:
        statement = statement.where(JOBS.c[name] == bindparam(name))
    if newest:
        overtaken = case((JOBS.c.state == JobState.SUPERSEDED.value, 1), else_=0)
        return statement.order_by(overtaken, JOBS.c.id.desc()).limit(1)
    return statement.order_by(JOBS.c.id)


@functools.cache
def tags_statement(*, by_source: bool) -> Select[Any]:
    """The jobs of the repository bound as `repository` whose tag is one of the list bound as
    `tags` (a scan's page of tags), and its untagged jobs (deletes and copies by digest) of the
    digests bound as `digests`; with `by_source`, only those of the source bound as `source`."""
    untagged = and_(JOBS.c.tag == NO_TAG, JOBS.c.digest.in_(bindparam("digests", expanding=True)))
    statement = select(JOBS).where(
        JOBS.c.repository == bindparam("repository"),
        or_(JOBS.c.tag.in_(bindparam("tags", expanding=True)), untagged),
    )
    if by_source:
        statement = statement.where(JOBS.c.source == bindparam("source"))
    return statement.order_by(JOBS.c.id)


def moved_copies_statement() -> Select[Any]:
    """The COMPLETE tagged copies of the repository bound as `repository` from the source bound
    as `source` to the destination bound as `destination` whose tag a later COMPLETE copy of the
    same route set to another digest (the image left untagged there by the daemon), past the id
    bound as `after`, `limit` at most, by id: the replicas a lost delete can leave behind
    untagged (scan/untagged_replicas.py)."""
    later = JOBS.alias("later")
    copy, done = JobKind.COPY.value, JobState.COMPLETE.value
    moved = exists().where(
        later.c.repository == JOBS.c.repository,
        later.c.tag == JOBS.c.tag,
        later.c.kind == copy,
        later.c.state == done,
        later.c.source == JOBS.c.source,
        later.c.destination == JOBS.c.destination,
        later.c.digest != JOBS.c.digest,
        later.c.finished_at > JOBS.c.finished_at,
    )
    return (
        select(JOBS)
        .where(
            JOBS.c.repository == bindparam("repository"),
            JOBS.c.kind == copy,
            JOBS.c.state == done,
            JOBS.c.source == bindparam("source"),
            JOBS.c.destination == bindparam("destination"),
            JOBS.c.tag != NO_TAG,
            JOBS.c.id > bindparam("after"),
            moved,
        )
        .order_by(JOBS.c.id)
        .limit(bindparam("limit"))
    )


MOVED_COPIES = moved_copies_statement()


@functools.cache
def update_statement(columns: tuple[str, ...]) -> Update:
    """UPDATE of `columns` on one job, guarded by its state; one statement per column set."""
    return (
        update(JOBS)
        .where(JOBS.c.id == bindparam("job_id"), JOBS.c.state == bindparam("old_state"))
        .values({name: bindparam(f"v_{name}") for name in columns})
    )


@functools.cache
def fenced_statement(columns: tuple[str, ...], *, timed: bool) -> Update:
    """UPDATE of `columns` on one IN_PROGRESS job, guarded by its claim: the claimer bound as
    `claimer` and, when `timed`, the moment of the claim bound as `claimed_at`, so a claimer
    whose job was re-queued and claimed again (by another process or by itself) cannot write
    it."""
    fence = JOBS.c.claimed_by == bindparam("claimer")
    if timed:
        fence = and_(fence, JOBS.c.started_at == bindparam("claimed_at"))
    return update_statement(columns).where(fence)


# What a refused fenced write is explained with.
HOLDER = select(JOBS.c.state, JOBS.c.claimed_by).where(JOBS.c.id == bindparam("job_id"))


def state_of(session: Session, job_id: int) -> Row[Any]:
    """The id, state and attempts of one job; JournalError if there is no such job."""
    found = execute(session, BY_ID, {"job_id": job_id}).first()
    if found is None:
        raise JournalError(f"job {job_id} does not exist", temporary=False)
    return found


_WORKING = JOBS.alias("working")
# A delete job is not due while a copy job of the same destination and repository is in
# flight that puts the manifest (same digest) or the tag (same tag) it deletes: the copy's
# manifest PUT, retried through an outage, would bring the image back after the delete found
# nothing to delete (domain.jobs.deletes.waits_for_copy, the rule this mirrors).
COPY_IN_FLIGHT = exists().where(
    _WORKING.c.kind == JobKind.COPY.value,
    _WORKING.c.state == JobState.IN_PROGRESS.value,
    _WORKING.c.destination == JOBS.c.destination,
    _WORKING.c.repository == JOBS.c.repository,
    or_(
        and_(JOBS.c.digest != "", _WORKING.c.digest == JOBS.c.digest),
        and_(JOBS.c.tag != NO_TAG, _WORKING.c.tag == JOBS.c.tag),
    ),
)
UNFENCED = or_(JOBS.c.kind != JobKind.DELETE.value, ~COPY_IN_FLIGHT)


# Cached per (limit, skipping, newest): the limit is the runner's free room, at most
# [workers] concurrency, so the cache holds a few dozen statements at most.
@functools.cache
def due_statement(limit: int, skipping: bool, newest: bool = False) -> Select[Any]:
    """Up to `limit` due jobs, oldest due first (`newest`: newest first): the candidates of a
    claim, which takes turns between sources among them (domain.destinations.fair_share).

    Both ends are read through ix_jobs_due, O(limit) however long the backlog: the oldest are
    who waited longest, the newest a source's new push behind another source's backlog."""
    # PENDING jobs are due from when they were queued (or their not_before), RETRY_WAIT ones
    # from their next attempt time; hosts sharing a database should keep their clocks in sync.
    due = and_(JOBS.c.state.in_(CLAIMABLE), JOBS.c.next_attempt_at <= bindparam("now"), UNFENCED)
    if skipping:
        due = and_(due, JOBS.c.destination.not_in(bindparam("skip", expanding=True)))
    order = (
        (JOBS.c.next_attempt_at.desc(), JOBS.c.id.desc())
        if newest
        else (JOBS.c.next_attempt_at, JOBS.c.id)
    )
    # FOR UPDATE SKIP LOCKED lets PostgreSQL claimers pass over each other's rows instead of
    # queueing; SQLite ignores it (its writers are already serialised by BEGIN IMMEDIATE).
    return (
        select(JOBS.c.id, JOBS.c.state, JOBS.c.destination, JOBS.c.source, JOBS.c.next_attempt_at)
        .where(due)
        .order_by(*order)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


# The working (IN_PROGRESS) jobs of each (destination, source): a few dozen rows at most (the
# workers of the processes sharing the journal), read through ix_jobs_due.
WORKING_PAIRS = (
    select(JOBS.c.destination, JOBS.c.source, func.count().label("working"))
    .where(JOBS.c.state == JobState.IN_PROGRESS.value)
    .group_by(JOBS.c.destination, JOBS.c.source)
)
