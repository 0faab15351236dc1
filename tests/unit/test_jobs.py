"""The job state machine, failure decisions, backoff and replication statuses."""

from __future__ import annotations

import itertools

import pytest

from replicator import errors
from replicator.domain.jobs import (
    TEMPORARY_FAILURES,
    TRANSITIONS,
    FailureCode,
    JobEvent,
    JobKey,
    JobKind,
    JobState,
    ReplicationStatus,
    after_death,
    after_failure,
    apply,
    backoff_seconds,
    claim_path,
    combined_status,
    decide_failure,
    failure_code,
    replication_status,
    transition,
)
from replicator.domain.jobs.ends import Failed

S = JobState
E = JobEvent

LEGAL = [
    (S.PENDING, E.START, S.IN_PROGRESS),
    (S.PENDING, E.DENY, S.FAILED),
    (S.IN_PROGRESS, E.SUCCEED, S.COMPLETE),
    (S.IN_PROGRESS, E.FAIL_TEMPORARY, S.RETRY_WAIT),
    (S.IN_PROGRESS, E.FAIL_PERMANENT, S.FAILED),
    (S.IN_PROGRESS, E.RESUME, S.PENDING),
    (S.IN_PROGRESS, E.HOLD, S.RETRY_WAIT),
    (S.IN_PROGRESS, E.SUPERSEDE, S.SUPERSEDED),
    (S.RETRY_WAIT, E.WAKE, S.PENDING),
    (S.FAILED, E.RETRY, S.PENDING),
]
ILLEGAL = sorted(
    (
        (state, event)
        for state, event in itertools.product(JobState, JobEvent)
        if (state, event) not in TRANSITIONS
    ),
    key=lambda pair: (pair[0].value, pair[1].value),
)


class TestTransition:
    """transition(): the one table."""

    @pytest.mark.parametrize(
        ("state", "event", "expected"), LEGAL, ids=[f"{s}-{e}" for s, e, _ in LEGAL]
    )
    def test_legal_transition(self, state: JobState, event: JobEvent, expected: JobState) -> None:
        """Each legal (state, event) pair leads to the documented next state."""
        assert transition(state, event) is expected

    def test_table_holds_exactly_the_legal_transitions(self) -> None:
        """The table has no entry beyond the documented ones (a new one needs a test row)."""
        assert dict(TRANSITIONS) == {(s, e): n for s, e, n in LEGAL}

    @pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=[f"{s}-{e}" for s, e in ILLEGAL])
    def test_illegal_transition_raises(self, state: JobState, event: JobEvent) -> None:
        """Every (state, event) pair missing from the table raises TransitionError."""
        with pytest.raises(errors.TransitionError, match=f"{state.value} cannot take"):
            transition(state, event)

    def test_final_state_error_says_so(self) -> None:
        """The error for a COMPLETE job says no event is allowed."""
        with pytest.raises(errors.TransitionError, match="none, the state is final"):
            transition(S.COMPLETE, E.RETRY)

    def test_transition_error_is_not_retryable(self) -> None:
        """An illegal transition is a bug: the retry predicate refuses it."""
        with pytest.raises(errors.TransitionError) as info:
            transition(S.COMPLETE, E.START)
        assert not errors.retryable(info.value)

    @pytest.mark.parametrize(
        ("state", "path"),
        [(S.PENDING, (E.START,)), (S.RETRY_WAIT, (E.WAKE, E.START))],
        ids=["pending", "retry-wait"],
    )
    def test_claim_path_reaches_in_progress(
        self, state: JobState, path: tuple[JobEvent, ...]
    ) -> None:
        """claim_path gives the events that take a claimable state to IN_PROGRESS."""
        assert claim_path(state) == path
        assert apply(state, path) is S.IN_PROGRESS

    def test_apply_stops_at_illegal_event(self) -> None:
        """apply() raises as soon as one event of the sequence is illegal."""
        with pytest.raises(errors.TransitionError):
            apply(S.PENDING, [E.START, E.SUCCEED, E.START])


class TestAfterFailure:
    """after_failure(): retry or give up."""

    @pytest.mark.parametrize(
        ("attempts", "max_attempts", "temporary", "expected"),
        [
            (1, 10, True, E.FAIL_TEMPORARY),
            (9, 10, True, E.FAIL_TEMPORARY),
            (10, 10, True, E.FAIL_PERMANENT),
            (11, 10, True, E.FAIL_PERMANENT),
            (1, 10, False, E.FAIL_PERMANENT),
            (1, 1, True, E.FAIL_PERMANENT),
        ],
        ids=["first", "one-left", "last", "beyond", "permanent", "single-attempt"],
    )
    def test_event(
        self, attempts: int, max_attempts: int, temporary: bool, expected: JobEvent
    ) -> None:
        """Temporary failures retry while attempts remain; anything else fails for good."""
        assert after_failure(attempts, max_attempts, temporary) is expected


class TestDecideFailure:
    """decide_failure(): event, code and reason recorded for a failed attempt."""

    def test_temporary_with_attempts_left_keeps_code(self) -> None:
        """A temporary failure with attempts left keeps its code and reason."""
        decision = decide_failure(
            code=FailureCode.TRANSPORT_ERROR,
            reason="reset",
            temporary=True,
            attempts=1,
            max_attempts=3,
        )
        assert (decision.event, decision.code, decision.reason) == (
            E.FAIL_TEMPORARY,
            FailureCode.TRANSPORT_ERROR,
            "reset",
        )

    def test_exhausted_becomes_max_attempts(self) -> None:
        """The last temporary failure becomes MAX_ATTEMPTS, the last error in the reason."""
        decision = decide_failure(
            code=FailureCode.TRANSPORT_ERROR,
            reason="reset",
            temporary=True,
            attempts=3,
            max_attempts=3,
        )
        assert decision.event is E.FAIL_PERMANENT
        assert decision.code is FailureCode.MAX_ATTEMPTS
        assert decision.reason == "gave up after 3 attempts: TRANSPORT_ERROR: reset"

    def test_permanent_keeps_code(self) -> None:
        """A permanent failure keeps its own code even on the first attempt."""
        decision = decide_failure(
            code=FailureCode.DIGEST_MISMATCH,
            reason="bad bytes",
            temporary=False,
            attempts=1,
            max_attempts=3,
        )
        assert (decision.event, decision.code) == (E.FAIL_PERMANENT, FailureCode.DIGEST_MISMATCH)

    @pytest.mark.parametrize(
        ("code", "reason", "expected", "recorded"),
        [
            pytest.param("TRANSPORT_ERROR", "reset", FailureCode.TRANSPORT_ERROR, "reset",
                         id="known"),
            pytest.param("JOURNAL_ERROR", "disk full", FailureCode.INTERNAL_ERROR,
                         "JOURNAL_ERROR: disk full", id="unknown-kept-in-reason"),
            pytest.param("INTERNAL_ERROR", "boom", FailureCode.INTERNAL_ERROR, "boom",
                         id="internal-as-is"),
        ],
    )  # fmt: skip
    def test_failure_of_an_error(
        self, code: str, reason: str, expected: FailureCode, recorded: str
    ) -> None:
        """An error's code becomes the FailureCode of that name; one jobs do not know becomes
        INTERNAL_ERROR, the error's code kept at the head of the reason."""
        failed = Failed.of_error(code, reason, temporary=False, max_attempts=3, backoff=0.0)
        assert (failed.code, failed.reason) == (expected, recorded)

    @pytest.mark.parametrize(
        "error",
        [
            errors.PolicyDenied("x"),
            errors.DigestMismatch("x"),
            errors.NotFoundError("x"),
            errors.AuthError("x"),
            errors.ManifestError("x"),
            errors.InvalidReferenceError("x"),
            errors.RegistryError("x"),
            errors.TransportError("x"),
            errors.SlowTransferError("x"),
            errors.DeleteRefused("x"),
            errors.ReplicatorError("x"),
        ],
        ids=lambda exc: type(exc).__name__,
    )
    def test_error_codes_are_failure_codes(self, error: errors.ReplicatorError) -> None:
        """Every error a copy can raise maps to the FailureCode of the same name."""
        assert failure_code(error.code).value == error.code


class TestAfterDeath:
    """A process death is not a verdict on a job: only deaths in a row, up to max_deaths."""

    @pytest.mark.parametrize(
        ("in_a_row", "last_death", "death", "max_deaths", "event", "now_in_a_row"),
        [
            pytest.param(0, None, 1, 3, E.RESUME, 1, id="first-death"),
            pytest.param(1, 1, 2, 3, E.RESUME, 2, id="second-in-a-row"),
            pytest.param(2, 2, 3, 3, E.FAIL_PERMANENT, 3, id="third-in-a-row-sets-aside"),
            pytest.param(2, 1, 3, 3, E.RESUME, 1, id="a-death-without-it-breaks-the-row"),
            pytest.param(9, 4, 9, 3, E.RESUME, 1, id="long-ago-row-forgotten"),
            pytest.param(0, None, 7, 1, E.FAIL_PERMANENT, 1, id="limit-one"),
            pytest.param(19, 40, 41, 20, E.FAIL_PERMANENT, 20, id="default-limit-reached"),
            pytest.param(18, 40, 41, 20, E.RESUME, 19, id="default-limit-not-yet"),
        ],
    )
    def test_table(
        self,
        in_a_row: int,
        last_death: int | None,
        death: int,
        max_deaths: int,
        event: JobEvent,
        now_in_a_row: int,
    ) -> None:
        """The event and the new count of deaths in a row for each situation."""
        decision = after_death(
            deaths_in_a_row=in_a_row, last_death=last_death, death=death, max_deaths=max_deaths
        )
        assert (decision.event, decision.deaths_in_a_row) == (event, now_in_a_row)

    def test_both_events_are_transitions_of_in_progress(self) -> None:
        """RESUME and FAIL_PERMANENT both leave IN_PROGRESS through the table."""
        assert transition(S.IN_PROGRESS, E.RESUME) is S.PENDING
        assert transition(S.IN_PROGRESS, E.FAIL_PERMANENT) is S.FAILED

    def test_limit_below_one_refused(self) -> None:
        """max_deaths 0 would fail every job at its first death: refused."""
        with pytest.raises(ValueError, match="max_deaths 0"):
            after_death(deaths_in_a_row=0, last_death=None, death=1, max_deaths=0)

    def test_temporary_failures(self) -> None:
        """Reconcile retries MAX_ATTEMPTS and PROCESS_DIED, nothing a person must fix."""
        assert {FailureCode.MAX_ATTEMPTS, FailureCode.PROCESS_DIED} == set(TEMPORARY_FAILURES)


class TestBackoff:
    """backoff_seconds(): exponential, capped, equal jitter."""

    @pytest.mark.parametrize(
        ("attempts", "jitter", "expected"),
        [
            (1, 0.0, 1.0),
            (1, 0.5, 1.5),
            (3, 0.0, 4.0),
            (3, 0.999, 4.0 + 4.0 * 0.999),
            (20, 0.0, 150.0),
            (10_000, 0.0, 150.0),
            (0, 0.0, 0.5),
        ],
        ids=["first", "first-jitter", "third", "third-max-jitter", "capped", "huge", "zero"],
    )
    def test_value(self, attempts: int, jitter: float, expected: float) -> None:
        """Half of min(cap, base**attempts) is fixed, the other half scaled by the jitter."""
        assert backoff_seconds(attempts, jitter_fraction=jitter) == pytest.approx(expected)

    def test_custom_base_and_cap(self) -> None:
        """base and cap are honoured."""
        assert backoff_seconds(2, base=3.0, cap=5.0, jitter_fraction=0.0) == pytest.approx(2.5)

    @pytest.mark.parametrize("jitter", [-0.1, 1.0, 2.0], ids=["negative", "one", "two"])
    def test_jitter_out_of_range(self, jitter: float) -> None:
        """A jitter fraction outside [0, 1) is refused."""
        with pytest.raises(ValueError, match="not in"):
            backoff_seconds(1, jitter_fraction=jitter)

    def test_negative_attempts(self) -> None:
        """A negative attempt count is refused."""
        with pytest.raises(ValueError, match="negative"):
            backoff_seconds(-1, jitter_fraction=0.0)

    def test_monotonic_without_jitter(self) -> None:
        """Without jitter the delay never shrinks as attempts grow."""
        delays = [backoff_seconds(n, jitter_fraction=0.0) for n in range(40)]
        assert delays == sorted(delays)


class TestReplicationStatus:
    """ECR statuses from job states."""

    @pytest.mark.parametrize(
        ("state", "expected"),
        [
            (S.PENDING, ReplicationStatus.IN_PROGRESS),
            (S.IN_PROGRESS, ReplicationStatus.IN_PROGRESS),
            (S.RETRY_WAIT, ReplicationStatus.IN_PROGRESS),
            (S.COMPLETE, ReplicationStatus.COMPLETE),
            (S.FAILED, ReplicationStatus.FAILED),
            (S.SUPERSEDED, ReplicationStatus.COMPLETE),
        ],
        ids=str,
    )
    def test_state_maps_to_status(self, state: JobState, expected: ReplicationStatus) -> None:
        """Unfinished states all show as IN_PROGRESS, as in ECR."""
        assert replication_status(state) is expected

    @pytest.mark.parametrize(
        ("states", "expected"),
        [
            ([S.COMPLETE], ReplicationStatus.COMPLETE),
            ([S.COMPLETE, S.PENDING], ReplicationStatus.IN_PROGRESS),
            ([S.COMPLETE, S.FAILED, S.RETRY_WAIT], ReplicationStatus.FAILED),
        ],
        ids=["complete", "in-progress-wins", "failed-wins"],
    )
    def test_combined(self, states: list[JobState], expected: ReplicationStatus) -> None:
        """Several jobs at one destination show the status most in need of attention."""
        assert combined_status(states) is expected

    def test_combined_needs_states(self) -> None:
        """Combining no states is a caller bug."""
        with pytest.raises(ValueError, match="no job states"):
            combined_status([])


class TestJobKey:
    """JobKey: the identity of a job."""

    def test_equal_keys_hash_alike(self) -> None:
        """Two keys with the same fields are equal and collapse in a set."""
        one = JobKey("use1", "app", "sha256:" + "a" * 64, "v1", "usw2")
        two = JobKey("use1", "app", "sha256:" + "a" * 64, "v1", "usw2", JobKind.COPY)
        assert len({one, two}) == 1

    def test_str_names_image_and_destination(self) -> None:
        """str() reads as kind, source/repository:tag@digest -> destination."""
        key = JobKey("use1", "app", "sha256:" + "a" * 64, "v1", "usw2")
        assert str(key) == f"copy use1/app:v1@sha256:{'a' * 64} -> usw2"
        untagged = JobKey("use1", "app", "sha256:" + "a" * 64, None, "usw2", JobKind.DELETE)
        assert str(untagged) == f"delete use1/app@sha256:{'a' * 64} -> usw2"
