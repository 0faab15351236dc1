"""Rows of the `jobs` table: insert, claim, finish, fail, resume, retry, supersede — in a session.

Every state written here is computed by domain.jobs.transition from the state read, and every
UPDATE is guarded by that state (`WHERE id = ? AND state = ?`), so two processes acting on the
same job never both succeed: the loser's UPDATE matches no row.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, and_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from replicator.domain.jobs import (
    CLAIMABLE_STATES,
    FailureCode,
    JobEvent,
    JobKey,
    JobState,
    apply,
    claim_path,
    decide_failure,
    transition,
)
from replicator.errors import JournalError, TransitionError
from replicator.journal.models import MAX_REASON_CHARS, NO_TAG, JobRecord, JobRow


def key_filter(key: JobKey) -> Any:
    """The WHERE clause selecting the job of `key`."""
    return and_(
        col(JobRecord.kind) == key.kind.value,
        col(JobRecord.source) == key.source,
        col(JobRecord.repository) == key.repository,
        col(JobRecord.digest) == key.digest,
        col(JobRecord.tag) == (key.tag or NO_TAG),
        col(JobRecord.destination) == key.destination,
    )


def find(session: Session, key: JobKey) -> JobRecord | None:
    """The job of `key`, if recorded."""
    return session.exec(select(JobRecord).where(key_filter(key))).first()


def _get(session: Session, job_id: int) -> JobRecord:
    # populate_existing: the guarded UPDATEs bypass the session, so never trust a cached row.
    record = session.get(JobRecord, job_id, populate_existing=True)
    if record is None:
        raise JournalError(f"job {job_id} does not exist", temporary=False)
    return record


def _guarded_update(session: Session, job_id: int, old: JobState, values: dict[str, Any]) -> bool:
    """UPDATE one job only if it is still in `old`; whether it was."""
    statement = (
        update(JobRecord)
        .where(col(JobRecord.id) == job_id, col(JobRecord.state) == old.value)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], session.execute(statement)).rowcount == 1


def _change(session: Session, job_id: int, event: JobEvent, values: dict[str, Any]) -> JobState:
    """Apply `event` to one job through the table; raise if it changed under us."""
    record = _get(session, job_id)
    old = JobState(record.state)
    new = transition(old, event)
    if not _guarded_update(session, job_id, old, {"state": new.value, **values}):
        raise TransitionError(
            f"job {job_id} left state {old.value} while {event.value} was being applied"
        )
    return new


def _bulk(
    session: Session, old: JobState, event: JobEvent, where: Any, values: dict[str, Any]
) -> int:
    """Apply `event` through the table to every job in `old` matching `where`; how many."""
    new = transition(old, event)
    statement = (
        update(JobRecord)
        .where(col(JobRecord.state) == old.value, where)
        .values(state=new.value, **values)
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], session.execute(statement)).rowcount


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
    }


def _new_record(
    key: JobKey, pushed_at: datetime | None, now: datetime, not_before: datetime | None = None
) -> JobRecord:
    return JobRecord(
        kind=key.kind.value,
        source=key.source,
        repository=key.repository,
        digest=key.digest,
        tag=key.tag or NO_TAG,
        destination=key.destination,
        state=JobState.PENDING.value,
        next_attempt_at=not_before or now,
        pushed_at=pushed_at,
        created_at=now,
        updated_at=now,
    )


def _insert_or_find(session: Session, key: JobKey, record: JobRecord) -> tuple[JobRecord, bool]:
    """Insert unless the key exists, also when another process inserts it at the same moment."""
    existing = find(session, key)
    if existing is not None:
        return existing, False
    try:
        with session.begin_nested():
            session.add(record)
    except IntegrityError:
        existing = find(session, key)
        if existing is None:
            raise
        return existing, False
    return record, True


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

    Times are aware UTC. A COMPLETE or unfinished job is left alone: that image already reached,
    or is on its way to, the destination. A FAILED one gets a new chance (FAILED --RETRY-->
    PENDING). Keys in `denied` end FAILED with POLICY_DENIED and the reason (PENDING --DENY-->).
    A new or re-queued job whose key is in `not_before` is not due before that time.
    """
    ids: list[int] = []
    changed = 0
    for key in dict.fromkeys([*keys, *denied]):
        later = (not_before or {}).get(key)
        record, inserted = _insert_or_find(session, key, _new_record(key, pushed_at, now, later))
        assert record.id is not None
        ids.append(record.id)
        if not inserted:
            if JobState(record.state) is not JobState.FAILED:
                continue
            values = {**_fresh_chance(now), "next_attempt_at": later or now}
            if pushed_at is not None:
                values["pushed_at"] = pushed_at
            _change(session, record.id, JobEvent.RETRY, values)
        changed += 1
        if key in denied:
            _change(
                session,
                record.id,
                JobEvent.DENY,
                {
                    "failure_code": FailureCode.POLICY_DENIED.value,
                    "failure_reason": denied[key][:MAX_REASON_CHARS],
                    "next_attempt_at": None,
                    "finished_at": now,
                    "updated_at": now,
                },
            )
    return ids, changed


def claim(session: Session, limit: int, now: datetime, skip: Collection[str] = ()) -> list[JobRow]:
    """Move up to `limit` due jobs to IN_PROGRESS (attempts + 1), oldest due first; jobs for
    the destinations in `skip` are left for later."""
    # PENDING jobs are due from when they were queued (or their not_before), RETRY_WAIT ones
    # from their next attempt time; hosts sharing a database should keep their clocks in sync.
    due = and_(
        col(JobRecord.state).in_([state.value for state in CLAIMABLE_STATES]),
        col(JobRecord.next_attempt_at) <= now,
    )
    if skip:
        due = and_(due, col(JobRecord.destination).not_in(list(skip)))
    # FOR UPDATE SKIP LOCKED lets PostgreSQL claimers pass over each other's rows instead of
    # queueing; SQLite ignores it (its writers are already serialised by BEGIN IMMEDIATE).
    candidates = session.exec(
        select(JobRecord.id, JobRecord.state)
        .where(due)
        .order_by(col(JobRecord.next_attempt_at), col(JobRecord.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    claimed: list[int] = []
    for job_id, state in candidates:
        assert job_id is not None
        old = JobState(state)
        assert old in CLAIMABLE_STATES
        new = apply(old, claim_path(old))
        values = {
            "state": new.value,
            "attempts": col(JobRecord.attempts) + 1,
            "next_attempt_at": None,
            "started_at": now,
            "finished_at": None,
            "updated_at": now,
        }
        if _guarded_update(session, job_id, old, values):
            claimed.append(job_id)
    if not claimed:
        return []
    statement = select(JobRecord).where(col(JobRecord.id).in_(claimed)).order_by(col(JobRecord.id))
    return [JobRow.from_record(record) for record in session.exec(statement).all()]


def succeed(session: Session, job_id: int, now: datetime, counters: dict[str, int]) -> None:
    """IN_PROGRESS --SUCCEED--> COMPLETE, with the copy's counters."""
    values = {"failure_code": None, "failure_reason": None, **counters}
    _change(session, job_id, JobEvent.SUCCEED, {**values, "finished_at": now, "updated_at": now})


def fail(
    session: Session,
    job_id: int,
    *,
    code: str,
    reason: str,
    temporary: bool,
    max_attempts: int,
    now: datetime,
    backoff: float,
) -> JobState:
    """IN_PROGRESS -> RETRY_WAIT (next attempt at now + backoff) or FAILED; the new state."""
    record = _get(session, job_id)
    decision = decide_failure(
        code=code,
        reason=reason,
        temporary=temporary,
        attempts=record.attempts,
        max_attempts=max_attempts,
    )
    waits = decision.event is JobEvent.FAIL_TEMPORARY
    values = {
        "failure_code": decision.code.value,
        "failure_reason": decision.reason[:MAX_REASON_CHARS],
        "next_attempt_at": now + timedelta(seconds=backoff) if waits else None,
        "finished_at": None if waits else now,
        "updated_at": now,
    }
    return _change(session, job_id, decision.event, values)


def resume(
    session: Session, now: datetime, started_before: datetime | None, max_attempts: int | None
) -> int:
    """Jobs left IN_PROGRESS by a stopped process: PENDING again, or FAILED when out of attempts.

    A job whose every attempt killed the process (say, out of memory) would otherwise crash-loop
    the daemon forever; `max_attempts` ends it as MAX_ATTEMPTS.
    """
    scope: Any = col(JobRecord.id).is_not(None)
    if started_before is not None:
        scope = col(JobRecord.started_at) < started_before
    failed = 0
    if max_attempts is not None:
        failed = _bulk(
            session,
            JobState.IN_PROGRESS,
            JobEvent.FAIL_PERMANENT,
            and_(scope, col(JobRecord.attempts) >= max_attempts),
            {
                "failure_code": FailureCode.MAX_ATTEMPTS.value,
                "failure_reason": "the process stopped while copying, on the last of "
                f"{max_attempts} allowed attempts",
                "finished_at": now,
                "updated_at": now,
            },
        )
    resumed = _bulk(
        session,
        JobState.IN_PROGRESS,
        JobEvent.RESUME,
        scope,
        {"next_attempt_at": now, "started_at": None, "updated_at": now},
    )
    return resumed + failed


def retry(session: Session, job_id: int | None, now: datetime) -> int:
    """FAILED --RETRY--> PENDING for one job or all failed ones; how many were re-queued."""
    scope: Any = col(JobRecord.id).is_not(None) if job_id is None else col(JobRecord.id) == job_id
    return _bulk(session, JobState.FAILED, JobEvent.RETRY, scope, _fresh_chance(now))


def supersede(session: Session, keys: Sequence[JobKey]) -> int:
    """Delete jobs of `keys` still PENDING (not yet claimed): another job covers their image.

    An index push lists its children, which the registry announced a moment earlier as untagged
    pushes; the index's job copies them, so their own jobs are dropped rather than run.
    """
    removed = 0
    for key in dict.fromkeys(keys):
        record = find(session, key)
        if record is not None and JobState(record.state) is JobState.PENDING:
            session.delete(record)
            removed += 1
    return removed
