"""The claim of a job and what follows it, on rows of the `jobs` table in a session: claim due
jobs, end an attempt (domain.jobs.ends), resume the jobs of a process that died.

A worker's writes (ending an attempt at a job it runs) are guarded by its claim as well as by
the state (`AND claimed_by = ? AND started_at = ?`): a job re-queued while its first claimer
still copies, and claimed again, ends once, by its holder; the stale claimer's write is refused
(ClaimLost). Every state written is computed by domain.jobs.transition (see job_rows.py).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_
from sqlmodel import Session

from replicator.domain.destinations.fair_share import Candidate, claim_order
from replicator.domain.jobs import (
    CLAIMABLE_STATES,
    FailureCode,
    JobEvent,
    JobState,
    after_death,
    apply,
    claim_path,
    death_reason,
    decide_failure,
    transition,
)
from replicator.domain.jobs.ends import Completed, Failed, Held, JobEnding, Superseded
from replicator.errors import ClaimLost, JournalError
from replicator.journal import queries
from replicator.journal.job_rows import guarded_update
from replicator.journal.models import MAX_REASON_CHARS, JobRow
from replicator.journal.queries import JOBS

# A limit no number of deaths reaches: callers that never set a job aside for deaths.
_NEVER = 2**62


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


def claim(
    session: Session, limit: int, now: datetime, claimer: str, skip: Collection[str] = ()
) -> list[JobRow]:
    """Move up to `limit` due jobs to IN_PROGRESS (attempts + 1) for `claimer`, by turns
    between the sources of each destination among the oldest and the newest due
    (queries.due_statement, domain.destinations.fair_share.claim_order); jobs for the
    destinations in `skip` are left for later."""
    params: dict[str, Any] = {"now": now}
    if skip:
        params["skip"] = list(skip)
    found: dict[int, Any] = {}
    for newest in (False, True):
        statement = queries.due_statement(limit, bool(skip), newest)
        for row in queries.execute(session, statement, params):
            found[row.id] = row
    if not found:
        return []
    working = {
        (row.destination, row.source): int(row.working)
        for row in queries.execute(session, queries.WORKING_PAIRS, {})
    }
    by_age = sorted(found.values(), key=lambda row: (row.next_attempt_at, row.id))
    chosen = claim_order(
        [Candidate(row.id, row.destination, row.source) for row in by_age], working, limit
    )
    candidates = [found[job_id] for job_id in chosen]
    claimed: list[int] = []
    for candidate in candidates:
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
        if guarded_update(session, orphan.id, JobState.IN_PROGRESS, values):
            changed.append(orphan.id)
            if decision.event is JobEvent.FAIL_PERMANENT:
                set_aside.append(orphan.id)
    return len(changed), set_aside
