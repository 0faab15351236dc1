"""Rows of the `jobs` table: insert, retry, supersede — in a session; the claim, the end of
an attempt and the resumption after a death are job_claims.py's.

Every state written here is computed by domain.jobs.transition from the state the row is in,
and every UPDATE is guarded by that state (`WHERE id = ? AND state = ?`), so two processes
acting on the same job never both succeed: the loser's UPDATE matches no row.

The statements themselves are in queries.py.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from replicator.domain.jobs import NO_ORIGIN, FailureCode, JobEvent, JobKey, JobState, transition
from replicator.errors import TransitionError
from replicator.journal import queries
from replicator.journal.models import MAX_REASON_CHARS, NO_TAG
from replicator.journal.queries import JOBS


def guarded_update(session: Session, job_id: int, old: JobState, values: dict[str, Any]) -> bool:
    """UPDATE one job only if it is still in `old`; whether it was."""
    columns = tuple(sorted(values))
    params = {"job_id": job_id, "old_state": old.value}
    params.update({f"v_{name}": values[name] for name in columns})
    return queries.execute(session, queries.update_statement(columns), params).rowcount == 1


def _change(
    session: Session,
    job_id: int,
    event: JobEvent,
    values: dict[str, Any],
    *,
    old: JobState,
) -> JobState:
    """Apply `event` to one job in state `old` (as the caller read or knows it) through the
    table; raise if it changed under us. The row is read again only to explain a refusal."""
    new = transition(old, event)
    if guarded_update(session, job_id, old, {"state": new.value, **values}):
        return new
    actual = JobState(queries.state_of(session, job_id).state)
    transition(actual, event)  # raises TransitionError when the event does not apply there
    raise TransitionError(
        f"job {job_id} left state {old.value} while {event.value} was being applied"
    )


def _bulk(
    session: Session, old: JobState, event: JobEvent, where: Any, values: dict[str, Any]
) -> int:
    """Apply `event` through the table to every job in `old` matching `where`; how many."""
    new = transition(old, event)
    statement = (
        update(JOBS).where(JOBS.c.state == old.value, where).values(state=new.value, **values)
    )
    return queries.execute(session, statement).rowcount


def _fresh_chance(now: datetime) -> dict[str, Any]:
    """Columns of a job given a new chance: no attempt made yet, no old failure."""
    return {
        "attempts": 0,
        "next_attempt_at": now,
        "failure_code": None,
        "failure_reason": None,
        "started_at": None,
        "finished_at": None,
        "updated_at": now,
        "deaths": 0,
        "last_death": None,
    }


def _new_row(
    key: JobKey, pushed_at: datetime | None, now: datetime, not_before: datetime | None = None
) -> dict[str, Any]:
    """Every column of a new PENDING job but its id."""
    values: dict[str, Any] = {
        "kind": key.kind.value,
        "source": key.source,
        "repository": key.repository,
        "digest": key.digest,
        "tag": key.tag or NO_TAG,
        "destination": key.destination,
        "state": JobState.PENDING.value,
        "attempts": 0,
        "next_attempt_at": not_before or now,
        "failure_code": None,
        "failure_reason": None,
        "bytes_copied": 0,
        "blobs_copied": 0,
        "blobs_mounted": 0,
        "blobs_skipped": 0,
        "pushed_at": pushed_at,
        "created_at": now,
        "updated_at": now,
        "started_at": None,
        "finished_at": None,
        "claimed_by": None,
        "origin": key.origin,
        "deaths": 0,
        "last_death": None,
    }
    assert set(values) == set(queries.INSERTED_COLUMNS), "a column of jobs has no value here"
    return values


def _insert_or_find(
    session: Session, key: JobKey, values: dict[str, Any]
) -> tuple[int, JobState | None]:
    """Insert unless the key exists, also when another process inserts it at the same moment;
    the job's id and, when it already existed, its state. A key of no event (a scan's) also
    finds an unfinished job of its image made by an event: that one is on its way."""
    existing = queries.find(session, key)
    if existing is None and key.origin == NO_ORIGIN:
        existing = queries.find_unfinished(session, key)
    if existing is not None:
        return existing.id, JobState(existing.state)
    try:
        with session.begin_nested():
            inserted = queries.execute(session, queries.INSERT, values).inserted_primary_key
    except IntegrityError:
        existing = queries.find(session, key)
        if existing is None:
            raise
        return existing.id, JobState(existing.state)
    assert inserted is not None
    return int(inserted[0]), None


def ensure(
    session: Session,
    keys: Sequence[JobKey],
    *,
    pushed_at: datetime | None,
    denied: Mapping[JobKey, str],
    now: datetime,
    not_before: Mapping[JobKey, datetime] | None = None,
) -> tuple[list[int], int]:
    """Insert missing jobs, re-queue FAILED ones; (ids of all keys' jobs, jobs created/re-queued).

    Times are aware UTC. A key is its event's (JobKey.origin): a job of the same event is
    left alone, whatever its state (a redelivery is no new work). A scan's key (NO_ORIGIN)
    leaves alone a COMPLETE job of its own (the scan repairs a lost image directly) and an
    unfinished job of its image by any event (on its way); its own FAILED one gets a new chance
    (FAILED --RETRY--> PENDING). Keys in `denied` end FAILED with POLICY_DENIED and the reason
    (PENDING --DENY-->). A new or re-queued job whose key is in `not_before` is not due before
    that time.
    """
    ids: list[int] = []
    changed = 0
    for key in dict.fromkeys([*keys, *denied]):
        later = (not_before or {}).get(key)
        job_id, existed = _insert_or_find(session, key, _new_row(key, pushed_at, now, later))
        ids.append(job_id)
        if existed is not None:
            if existed is not JobState.FAILED or key.origin != NO_ORIGIN:
                continue
            values = {**_fresh_chance(now), "next_attempt_at": later or now}
            if pushed_at is not None:
                values["pushed_at"] = pushed_at
            _change(session, job_id, JobEvent.RETRY, values, old=existed)
        changed += 1
        if key in denied:
            _change(
                session,
                job_id,
                JobEvent.DENY,
                {
                    "failure_code": FailureCode.POLICY_DENIED.value,
                    "failure_reason": denied[key][:MAX_REASON_CHARS],
                    "next_attempt_at": None,
                    "finished_at": now,
                    "updated_at": now,
                },
                old=JobState.PENDING,
            )
    return ids, changed


def retry(
    session: Session,
    job_id: int | None,
    now: datetime,
    codes: Collection[str] | None = None,
    destination: str | None = None,
) -> int:
    """FAILED --RETRY--> PENDING for one job or all failed ones (only those failed with one of
    `codes`, to `destination`, when given); how many were re-queued."""
    scope: Any = JOBS.c.id.is_not(None) if job_id is None else JOBS.c.id == job_id
    if codes is not None:
        scope = and_(scope, JOBS.c.failure_code.in_(list(codes)))
    if destination is not None:
        scope = and_(scope, JOBS.c.destination == destination)
    return _bulk(session, JobState.FAILED, JobEvent.RETRY, scope, _fresh_chance(now))


def supersede(session: Session, keys: Sequence[JobKey]) -> int:
    """Delete the jobs of the images of `keys` still PENDING (not yet claimed), whichever
    events made them: another job covers those images.

    An index push lists its children, which the registry announced a moment earlier as untagged
    pushes (events of their own); the index's job copies them, so their jobs are dropped rather
    than run.
    """
    removed = 0
    for key in dict.fromkeys(key.image for key in keys):
        removed += queries.execute(
            session, queries.DELETE_PENDING, queries.key_params(key)
        ).rowcount
    return removed
