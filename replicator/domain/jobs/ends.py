"""How an attempt at a job ends: one value, made by the job runner (or a backfill handing its
jobs back), written by the journal through the state table (journal/job_claims.py `end`), and the
same for every taker of it (the journal, a backfill's ClaimLedger, the runner's JobQueue).

    Completed(counters)                  IN_PROGRESS --SUCCEED-->   COMPLETE
    Superseded(reason, counters)         IN_PROGRESS --SUPERSEDE--> SUPERSEDED
    Failed(code, reason, temporary, ..)  IN_PROGRESS --FAIL_TEMPORARY--> RETRY_WAIT (attempts
                                         left) or --FAIL_PERMANENT--> FAILED (decide_failure)
    Held(code, reason)                   IN_PROGRESS --HOLD-->      RETRY_WAIT, due now, the
                                         attempt not counted (its destination is unreachable)
"""

from __future__ import annotations

from dataclasses import dataclass

from replicator.domain.jobs import FailureCode, failure_code


@dataclass(frozen=True, slots=True)
class CopyCounters:
    """What a finished copy moved, kept on its job."""

    bytes_copied: int = 0
    blobs_copied: int = 0
    blobs_mounted: int = 0
    blobs_skipped: int = 0


@dataclass(frozen=True, slots=True)
class Completed:
    """The job did what its event asked."""

    counters: CopyCounters = CopyCounters()


@dataclass(frozen=True, slots=True)
class Superseded:
    """The source moved on since the job's event: `reason` says how (kept as the job's)."""

    reason: str
    counters: CopyCounters = CopyCounters()


@dataclass(frozen=True, slots=True)
class Failed:
    """The attempt failed with `code`; a temporary failure waits `backoff` seconds while the
    job has attempts left of `max_attempts`, then fails as MAX_ATTEMPTS."""

    code: FailureCode
    reason: str
    temporary: bool
    max_attempts: int
    backoff: float

    @classmethod
    def of_error(
        cls, code: str, reason: str, *, temporary: bool, max_attempts: int, backoff: float
    ) -> Failed:
        """The failure of an error whose `.code` is `code`: one jobs do not know becomes
        INTERNAL_ERROR, the error's code kept at the head of the reason."""
        known = failure_code(code)
        if known is FailureCode.INTERNAL_ERROR and code != FailureCode.INTERNAL_ERROR:
            reason = f"{code}: {reason}"
        return cls(known, reason, temporary, max_attempts, backoff)


@dataclass(frozen=True, slots=True)
class Held:
    """The attempt failed at a destination known unreachable: the job waits for it to answer,
    the attempt not counted (domain.destinations.counts_attempt)."""

    code: FailureCode
    reason: str


JobEnding = Completed | Superseded | Failed | Held
