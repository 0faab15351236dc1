"""The job state machine: one table of (state, event) -> next state, after h11.

    PENDING --START--> IN_PROGRESS --SUCCEED--------> COMPLETE
       |                   |  |  |---SUPERSEDE-----> SUPERSEDED
       |                   |  |  \\--FAIL_PERMANENT--> FAILED --RETRY--> PENDING
       |                   |  \\----FAIL_TEMPORARY--> RETRY_WAIT --WAKE--> PENDING
       |                   |  \\----HOLD (destination down, attempt not counted) --> RETRY_WAIT
       |                   \\------RESUME (crash)----> PENDING
       \\--DENY (policy)--> FAILED

An event without an entry raises TransitionError: it is a bug in the caller, never retried.
Whether a failure is retried, and after how long, are pure functions here too; the caller
supplies the attempt count, the limit and the random jitter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType

from replicator.errors import TransitionError


class JobState(StrEnum):
    """Where a job is; stored as these strings in the journal."""

    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    RETRY_WAIT = "RETRY_WAIT"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"
    # The source moved on since the job's event (its tag was pushed again, or a deleted tag
    # re-pushed): a newer event's job does the work, this one left the tag alone.
    SUPERSEDED = "SUPERSEDED"


class JobEvent(StrEnum):
    """What happens to a job."""

    START = "START"  # a worker claims the job
    SUCCEED = "SUCCEED"  # the copy finished
    FAIL_TEMPORARY = "FAIL_TEMPORARY"  # failed, will be tried again later
    FAIL_PERMANENT = "FAIL_PERMANENT"  # failed for good (permanent error or attempts used up)
    DENY = "DENY"  # the destination's policy refuses it before any work
    RESUME = "RESUME"  # crash recovery: a job left IN_PROGRESS is queued again
    RETRY = "RETRY"  # an operator, or a new push of the same image, gives a failed job a new chance
    WAKE = "WAKE"  # the retry wait is over
    SUPERSEDE = "SUPERSEDE"  # the source serves something newer than the job's event named
    # The destination is known unreachable (domain.destinations): the job waits for it to
    # answer again, the attempt not counted.
    HOLD = "HOLD"


class JobKind(StrEnum):
    """What a job does at the destination."""

    COPY = "COPY"
    DELETE = "DELETE"


class ReplicationStatus(StrEnum):
    """The three statuses of ECR's DescribeImageReplicationStatus."""

    IN_PROGRESS = "IN_PROGRESS"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"


class FailureCode(StrEnum):
    """Why a job failed; values equal the `.code` of replicator.errors classes where one exists."""

    POLICY_DENIED = "POLICY_DENIED"
    DIGEST_MISMATCH = "DIGEST_MISMATCH"
    NOT_FOUND = "NOT_FOUND"
    AUTH_FAILED = "AUTH_FAILED"
    INVALID_MANIFEST = "INVALID_MANIFEST"
    INVALID_REFERENCE = "INVALID_REFERENCE"
    REGISTRY_ERROR = "REGISTRY_ERROR"
    TRANSPORT_ERROR = "TRANSPORT_ERROR"
    TLS_ERROR = "TLS_ERROR"
    MAX_ATTEMPTS = "MAX_ATTEMPTS"
    PROCESS_DIED = "PROCESS_DIED"
    DELETE_REFUSED = "DELETE_REFUSED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    TRANSFER_TOO_SLOW = "TRANSFER_TOO_SLOW"
    # The registry is no longer in the config when its job comes to run.
    CONFIG_INVALID = "CONFIG_INVALID"
    # A backfill stopped during the copy and handed the job back (the next run resumes it).
    INTERRUPTED = "INTERRUPTED"


S = JobState
E = JobEvent

TRANSITIONS: Mapping[tuple[JobState, JobEvent], JobState] = MappingProxyType(
    {
        (S.PENDING, E.START): S.IN_PROGRESS,
        (S.PENDING, E.DENY): S.FAILED,
        (S.IN_PROGRESS, E.SUCCEED): S.COMPLETE,
        (S.IN_PROGRESS, E.FAIL_TEMPORARY): S.RETRY_WAIT,
        (S.IN_PROGRESS, E.FAIL_PERMANENT): S.FAILED,
        (S.IN_PROGRESS, E.RESUME): S.PENDING,
        (S.IN_PROGRESS, E.HOLD): S.RETRY_WAIT,
        (S.IN_PROGRESS, E.SUPERSEDE): S.SUPERSEDED,
        (S.RETRY_WAIT, E.WAKE): S.PENDING,
        (S.FAILED, E.RETRY): S.PENDING,
    }
)

TERMINAL_STATES = frozenset({S.COMPLETE, S.FAILED, S.SUPERSEDED})
# States a worker may claim: PENDING at once, RETRY_WAIT once its next attempt is due.
CLAIMABLE_STATES = (S.PENDING, S.RETRY_WAIT)

_REPLICATION_STATUS = MappingProxyType(
    {
        S.PENDING: ReplicationStatus.IN_PROGRESS,
        S.IN_PROGRESS: ReplicationStatus.IN_PROGRESS,
        S.RETRY_WAIT: ReplicationStatus.IN_PROGRESS,
        S.COMPLETE: ReplicationStatus.COMPLETE,
        S.FAILED: ReplicationStatus.FAILED,
        # What the job's event asked for is done as far as the source still wants it (the
        # image copied untagged, or a delete the source overtook left undone).
        S.SUPERSEDED: ReplicationStatus.COMPLETE,
    }
)
# When several jobs (tags) of one digest reach one destination, the status shown is the one
# that most needs attention: a failure first, then work still going on.
_STATUS_PRECEDENCE = (
    ReplicationStatus.FAILED,
    ReplicationStatus.IN_PROGRESS,
    ReplicationStatus.COMPLETE,
)
# Exponents above this already exceed any sensible cap; stopping here keeps float powers finite.
_MAX_BACKOFF_EXPONENT = 64


def transition(state: JobState, event: JobEvent) -> JobState:
    """The state after `event`; raise TransitionError when the table has no entry."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        allowed = sorted(e.value for (s, e) in TRANSITIONS if s == state)
        raise TransitionError(
            f"job in state {state.value} cannot take event {event.value} "
            f"(allowed: {', '.join(allowed) or 'none, the state is final'})"
        ) from None


def claim_path(state: JobState) -> tuple[JobEvent, ...]:
    """The events that take a claimable job to IN_PROGRESS: START, after WAKE if it waited."""
    if state is S.RETRY_WAIT:
        return (E.WAKE, E.START)
    return (E.START,)


def apply(state: JobState, events: Iterable[JobEvent]) -> JobState:
    """Run `events` through the table in order."""
    for event in events:
        state = transition(state, event)
    return state


def after_failure(attempts: int, max_attempts: int, temporary: bool) -> JobEvent:
    """FAIL_TEMPORARY while a temporary failure has attempts left, else FAIL_PERMANENT."""
    if temporary and attempts < max_attempts:
        return E.FAIL_TEMPORARY
    return E.FAIL_PERMANENT


def backoff_seconds(
    attempts: int, *, base: float = 2.0, cap: float = 300.0, jitter_fraction: float
) -> float:
    """Seconds to wait after the `attempts`-th failure: base**attempts capped, with equal jitter.

    Equal jitter keeps half the delay fixed and spreads the other half by `jitter_fraction`
    (a random number in [0, 1) the caller draws), so retries of a burst do not arrive together
    yet never come sooner than half the exponential delay.
    """
    if not 0.0 <= jitter_fraction < 1.0:
        raise ValueError(f"jitter_fraction {jitter_fraction} is not in [0, 1)")
    if attempts < 0:
        raise ValueError(f"attempts {attempts} is negative")
    delay = min(cap, base ** min(attempts, _MAX_BACKOFF_EXPONENT))
    return delay / 2 + delay / 2 * jitter_fraction


@dataclass(frozen=True, slots=True)
class FailureDecision:
    """What a failure does to a job: the event to apply and the code and reason to record."""

    event: JobEvent
    code: FailureCode
    reason: str


def failure_code(code: str) -> FailureCode:
    """The FailureCode named by an error's `.code`; INTERNAL_ERROR for codes jobs do not use."""
    try:
        return FailureCode(code)
    except ValueError:
        return FailureCode.INTERNAL_ERROR


def decide_failure(
    *, code: FailureCode, reason: str, temporary: bool, attempts: int, max_attempts: int
) -> FailureDecision:
    """The event, code and reason for a failed attempt: a temporary failure with no attempts
    left becomes MAX_ATTEMPTS with the last error in the reason."""
    event = after_failure(attempts, max_attempts, temporary)
    if temporary and event is E.FAIL_PERMANENT:
        return FailureDecision(
            event, FailureCode.MAX_ATTEMPTS, f"gave up after {attempts} attempts: {code}: {reason}"
        )
    return FailureDecision(event, code, reason)


# FAILED jobs whose cause may have passed (temporary errors every time, or the process dying
# under them): the periodic reconcile gives them a new chance. The others need a person.
TEMPORARY_FAILURES = frozenset({FailureCode.MAX_ATTEMPTS, FailureCode.PROCESS_DIED})


@dataclass(frozen=True, slots=True)
class DeathDecision:
    """What a process death does to a job it had in flight: the event (RESUME, or
    FAIL_PERMANENT when it was in flight at too many deaths in a row) and the new count."""

    event: JobEvent
    deaths_in_a_row: int


def after_death(
    *, deaths_in_a_row: int, last_death: int | None, death: int, max_deaths: int
) -> DeathDecision:
    """Judge a job found in flight at process death number `death` (deaths are numbered in
    the order they are found, one number per recovery).

    A death is not a verdict on the job: most deaths have another cause (a kill, a reboot, out of
    memory elsewhere) and the job is resumed, its interrupted attempt not counted. Only a job in
    flight at every one of `max_deaths` deaths in a row (its `last_death` the one just before)
    is set aside, FAILED with PROCESS_DIED: a job that kills the process must not crash-loop it.
    """
    if max_deaths < 1:
        raise ValueError(f"max_deaths {max_deaths} is less than 1")
    in_a_row = deaths_in_a_row + 1 if last_death is not None and last_death == death - 1 else 1
    event = E.FAIL_PERMANENT if in_a_row >= max_deaths else E.RESUME
    return DeathDecision(event, in_a_row)


def death_reason(deaths_in_a_row: int) -> str:
    """The failure reason of a job set aside for the process deaths it was in flight at."""
    times = "once" if deaths_in_a_row == 1 else f"{deaths_in_a_row} times in a row"
    return (
        f"the process died {times} while this job was in flight (see the log for why); "
        "retry it once the cause is fixed"
    )


def replication_status(state: JobState) -> ReplicationStatus:
    """The ECR status a job state shows as: anything not finished is IN_PROGRESS."""
    return _REPLICATION_STATUS[state]


def combined_status(states: Iterable[JobState]) -> ReplicationStatus:
    """One status for several jobs of an image at one destination: FAILED, else IN_PROGRESS."""
    present = {replication_status(state) for state in states}
    if not present:
        raise ValueError("no job states to combine")
    return next(status for status in _STATUS_PRECEDENCE if status in present)


# The origin of a job no event made (backfill, reconcile): a scan's observation "the destination
# lacks this image" is the same work however often it is made, so a scan finds the job it (or an
# event) queued before instead of queueing another.
NO_ORIGIN = ""


@dataclass(frozen=True, slots=True)
class JobKey:
    """What makes a job unique: one image (digest, tag or none) from a source to a destination,
    and the event that asked for it.

    `source` and `destination` are registry names from the config. `origin` names the event
    (domain.jobs.freshness.event_origin of its id): a newer push of the same image (a rollback
    A -> B -> A, a re-push after a delete) is new work even when an older job of it is COMPLETE,
    while a redelivery of the same event finds its job. NO_ORIGIN for jobs of no event.
    """

    source: str
    repository: str
    digest: str
    tag: str | None
    destination: str
    kind: JobKind = JobKind.COPY
    origin: str = NO_ORIGIN

    @property
    def image(self) -> JobKey:
        """The key without its origin: the image and destination, whichever event asked."""
        return replace(self, origin=NO_ORIGIN)

    def __str__(self) -> str:
        image = f"{self.repository}@{self.digest}"
        if self.tag:
            image = f"{self.repository}:{self.tag}@{self.digest}"
        return f"{self.kind.value.lower()} {self.source}/{image} -> {self.destination}"
