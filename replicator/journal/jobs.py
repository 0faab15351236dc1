"""Rows of the `jobs` table: insert, claim, end an attempt, resume, retry, supersede — in a session.

Every state written here is computed by domain.jobs.transition from the state the row is in,
and every UPDATE is guarded by that state (`WHERE id = ? AND state = ?`), so two processes
acting on the same job never both succeed: the loser's UPDATE matches no row. A worker's writes
(finishing or failing a job it runs) are guarded by its claim too (`AND claimed_by = ? AND
started_at = ?`): a job re-queued while its first claimer still copies, and claimed again,
ends once, by its holder; the stale claimer's write is refused (ClaimLost).

The statements themselves are in queries.py.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from replicator.domain.jobs import (
    CLAIMABLE_STATES,
    NO_ORIGIN,
    FailureCode,
    JobEvent,
    JobKey,
    JobState,
    after_death,
    apply,
    claim_path,
    death_reason,
    decide_failure,
    transition,
)
from replicator.domain.jobs.ends import Completed, Failed, Held, JobEnding, Superseded
from replicator.errors import ClaimLost, JournalError, TransitionError
from replicator.journal import queries
from replicator.journal.models import MAX_REASON_CHARS, NO_TAG, JobRow
from replicator.journal.queries import JOBS

# A limit no number of deaths reaches: callers that never set a job aside for deaths.
_NEVER = 2**62


def _guarded_update(session: Session, job_id: int, old: JobState, values: dict[str, Any]) -> bool:
    """UPDATE one job only if it is still in `old`; whether it was."""
    columns = tuple(sorted(values))
    params = {"job_id": job_id, "old_state": old.value}
    params.update({f"v_{name}": values[name] for name in columns})
    return queries.execute(session, queries.update_statement(columns), params).rowcount == 1


@dataclass(frozen=True, slots=True)
class Claim:
    """Who holds an IN_PROGRESS job: the claimer recorded on it and, when known, the moment of
    the claim (its started_at). A worker's writes are fenced by it."""

    claimer: str
    at: datetime | None = None


def _fenced_change(
    session: Session, job_id: int, event: JobEvent, values: dict[str, Any], claim: Claim
) -> JobState:
    """Apply `event` to an IN_PROGRESS job only while `claim` still holds it; ClaimLost when
    the job was re-queued (and maybe claimed again) since, the write refused."""
    new = transition(JobState.IN_PROGRESS, event)
    values = {"state": new.value, **values}
    columns = tuple(sorted(values))
    params = {
        "job_id": job_id,
        "old_state": JobState.IN_PROGRESS.value,
        "claimer": claim.claimer,
        "claimed_at": claim.at,
    }
    params.update({f"v_{name}": values[name] for name in columns})
    statement = queries.fenced_statement(columns, timed=claim.at is not None)
    if queries.execute(session, statement, params).rowcount == 1:
        return new
    holder = queries.execute(session, queries.HOLDER, {"job_id": job_id}).first()
    if holder is None:
        raise JournalError(f"job {job_id} does not exist", temporary=False)
    raise ClaimLost(
        f"job {job_id} is no longer held by this claimer: it is {holder.state}, "
        f"claimed by {holder.claimed_by or 'nobody'}"
    )


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
    if _guarded_update(session, job_id, old, {"state": new.value, **values}):
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


def claim(
    session: Session, limit: int, now: datetime, claimer: str, skip: Collection[str] = ()
) -> list[JobRow]:
    """Move up to `limit` due jobs to IN_PROGRESS (attempts + 1) for `claimer`, by turns
    between the sources of each destination (queries.due_statement); jobs for the
    destinations in `skip` are left for later."""
    params: dict[str, Any] = {"now": now}
    if skip:
        params["skip"] = list(skip)
    candidates = queries.execute(session, queries.due_statement(limit, bool(skip)), params).all()
    if not candidates:
        return []
    locked = {
        row.id
        for row in queries.execute(
            session, queries.LOCK_FOR_CLAIM, {"ids": [c.id for c in candidates]}
        )
    }
    claimed: list[int] = []
    for candidate in (c for c in candidates if c.id in locked):
        job_id, old = candidate.id, JobState(candidate.state)
        assert old in CLAIMABLE_STATES
        new = apply(old, claim_path(old))
        moved = {
            "job_id": job_id,
            "old_state": old.value,
            "new_state": new.value,
            "now": now,
            "claimer": claimer,
        }
        if queries.execute(session, queries.CLAIM, moved).rowcount == 1:
            claimed.append(job_id)
    if not claimed:
        return []
    return queries.rows(session, queries.ROWS_BY_IDS.params(ids=claimed))


def end(session: Session, job_id: int, claim: Claim, ending: JobEnding, now: datetime) -> JobState:
    """Record how an attempt at an IN_PROGRESS job ended (domain.jobs.ends); the new state.
    Only while `claim` holds the job (else ClaimLost, nothing written).

    Completed --SUCCEED--> COMPLETE and Superseded --SUPERSEDE--> SUPERSEDED, with the copy's
    counters (a Superseded's reason kept as the job's); Failed --FAIL_TEMPORARY--> RETRY_WAIT
    (next attempt at now + backoff) or --FAIL_PERMANENT--> FAILED (domain.jobs.decide_failure);
    Held --HOLD--> RETRY_WAIT due now, this attempt not counted.
    """
    match ending:
        case Completed(counters) | Superseded(_, counters):
            reason = ending.reason[:MAX_REASON_CHARS] if isinstance(ending, Superseded) else None
            values: dict[str, Any] = {
                "failure_code": None,
                "failure_reason": reason,
                "bytes_copied": counters.bytes_copied,
                "blobs_copied": counters.blobs_copied,
                "blobs_mounted": counters.blobs_mounted,
                "blobs_skipped": counters.blobs_skipped,
                "finished_at": now,
                "updated_at": now,
            }
            event = JobEvent.SUCCEED if isinstance(ending, Completed) else JobEvent.SUPERSEDE
            return _fenced_change(session, job_id, event, values, claim)
        case Failed():
            return _failed(session, job_id, claim, ending, now)
        case Held(code, reason):
            found = queries.state_of(session, job_id)
            values = {
                "attempts": max(found.attempts - 1, 0),
                "failure_code": code.value,
                "failure_reason": reason[:MAX_REASON_CHARS],
                "next_attempt_at": now,
                "finished_at": None,
                "updated_at": now,
            }
            return _fenced_change(session, job_id, JobEvent.HOLD, values, claim)


def _failed(session: Session, job_id: int, claim: Claim, failed: Failed, now: datetime) -> JobState:
    """IN_PROGRESS -> RETRY_WAIT (next attempt at now + backoff) or FAILED; the new state."""
    found = queries.state_of(session, job_id)
    decision = decide_failure(
        code=failed.code,
        reason=failed.reason,
        temporary=failed.temporary,
        attempts=found.attempts,
        max_attempts=failed.max_attempts,
    )
    waits = decision.event is JobEvent.FAIL_TEMPORARY
    values = {
        "failure_code": decision.code.value,
        "failure_reason": decision.reason[:MAX_REASON_CHARS],
        "next_attempt_at": now + timedelta(seconds=failed.backoff) if waits else None,
        "finished_at": None if waits else now,
        "updated_at": now,
    }
    return _fenced_change(session, job_id, decision.event, values, claim)


def resume(
    session: Session,
    now: datetime,
    started_before: datetime | None,
    max_deaths: int | None,
    *,
    dead: Collection[str] = (),
    spare: Collection[str] = (),
) -> tuple[int, list[int]]:
    """Jobs left IN_PROGRESS by a stopped process: PENDING again, or FAILED PROCESS_DIED when
    in flight at `max_deaths` process deaths in a row (see domain.jobs.after_death); how many,
    and the ids of those set aside.

    Taken: every IN_PROGRESS job (`started_before` None) or those claimed before it, and those
    whose claimer is in `dead`; never those of a claimer in `spare` (known to be running).
    Finding any is one process death: it gets the next number of the journal's death counter.
    The interrupted attempt is not counted against the job (the death was not its failure);
    without `max_deaths` no job is ever set aside.
    """
    scope: Any = JOBS.c.id.is_not(None)
    if started_before is not None:
        scope = JOBS.c.started_at < started_before
    if dead:
        scope = or_(scope, JOBS.c.claimed_by.in_(list(dead)))
    if spare:
        scope = and_(scope, or_(JOBS.c.claimed_by.is_(None), JOBS.c.claimed_by.not_in(list(spare))))
    # The counter is locked first, so of two processes recovering at once the second finds the
    # orphans already resumed, and a death is numbered once.
    previous = int(queries.execute(session, queries.DEATHS_FOR_UPDATE).scalar_one())
    orphans = queries.execute(session, queries.orphans_statement(scope)).all()
    if not orphans:
        return 0, []
    death = previous + 1
    queries.execute(session, queries.SET_DEATHS, {"value": str(death)})
    changed: list[int] = []
    set_aside: list[int] = []
    for orphan in orphans:
        decision = after_death(
            deaths_in_a_row=orphan.deaths,
            last_death=orphan.last_death,
            death=death,
            max_deaths=max_deaths or _NEVER,
        )
        new = transition(JobState.IN_PROGRESS, decision.event)
        values: dict[str, Any] = {
            "state": new.value,
            "attempts": max(orphan.attempts - 1, 0),
            "deaths": decision.deaths_in_a_row,
            "last_death": death,
            "updated_at": now,
        }
        if decision.event is JobEvent.RESUME:
            values |= {"next_attempt_at": now, "started_at": None}
        else:
            values |= {
                "failure_code": FailureCode.PROCESS_DIED.value,
                "failure_reason": death_reason(decision.deaths_in_a_row),
                "next_attempt_at": None,
                "finished_at": now,
            }
        # A job another process moved meanwhile (a peer's sweep) is left to it.
        if _guarded_update(session, orphan.id, JobState.IN_PROGRESS, values):
            changed.append(orphan.id)
            if decision.event is JobEvent.FAIL_PERMANENT:
                set_aside.append(orphan.id)
    return len(changed), set_aside


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
