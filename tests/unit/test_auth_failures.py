"""Token failures remembered per (realm, scope) with a doubling backoff (domain/auth/failures)."""

from __future__ import annotations

import pytest

from replicator.domain.auth.failures import (
    FIRST_RETRY_SECONDS,
    FORGET_AFTER_SECONDS,
    LONGEST_RETRY_SECONDS,
    MAX_REMEMBERED,
    AuthFailures,
    retry_wait,
)

REALM, OTHER_REALM = "https://auth.example/token", "https://dead.example/token"
SCOPE, OTHER_SCOPE = "repository:a:pull", "repository:b:pull"


class TestRetryWait:
    """The wait doubles with each failure in a row, from the first wait to the longest."""

    @pytest.mark.parametrize(
        ("in_a_row", "wait"),
        [
            (1, FIRST_RETRY_SECONDS),
            (2, FIRST_RETRY_SECONDS * 2),
            (3, FIRST_RETRY_SECONDS * 4),
            (7, LONGEST_RETRY_SECONDS),
            (500, LONGEST_RETRY_SECONDS),
        ],
        ids=["first", "second", "third", "capped", "huge"],
    )
    def test_wait(self, in_a_row: int, wait: float) -> None:
        """retry_wait(n) is FIRST * 2**(n-1), never above LONGEST."""
        assert retry_wait(in_a_row) == wait


class TestAuthFailures:
    """What is blocked, for how long, and what is not."""

    @pytest.mark.parametrize(
        ("realm", "scope", "at", "blocked"),
        [
            (REALM, SCOPE, 0.0, True),
            (REALM, SCOPE, FIRST_RETRY_SECONDS - 0.01, True),
            (REALM, SCOPE, FIRST_RETRY_SECONDS, False),
            (REALM, OTHER_SCOPE, 0.0, False),
            (OTHER_REALM, SCOPE, 0.0, False),
        ],
        ids=["at-once", "before-wait-ends", "wait-over", "other-scope", "other-realm"],
    )
    def test_blocked(self, realm: str, scope: str, at: float, blocked: bool) -> None:
        """A failure blocks its own (realm, scope) until its wait is over, nothing else."""
        failures = AuthFailures()
        failures.failed(REALM, SCOPE, reason="down", temporary=True, now=0.0)
        assert (failures.blocked(realm, scope, at) is not None) is blocked

    def test_failures_in_a_row_double_the_wait(self) -> None:
        """Each failure right after the last wait doubles the next wait."""
        failures = AuthFailures()
        now = 0.0
        waits = []
        for _ in range(3):
            failure = failures.failed(REALM, SCOPE, reason="down", temporary=True, now=now)
            waits.append(failure.until - now)
            now = failure.until
        assert waits == [FIRST_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2, FIRST_RETRY_SECONDS * 4]

    def test_a_failure_long_after_starts_again(self) -> None:
        """A failure long after the last one's wait ended waits the first wait again."""
        failures = AuthFailures()
        first = failures.failed(REALM, SCOPE, reason="down", temporary=True, now=0.0)
        later = first.until + FORGET_AFTER_SECONDS
        again = failures.failed(REALM, SCOPE, reason="down", temporary=True, now=later)
        assert (again.in_a_row, again.until - later) == (1, FIRST_RETRY_SECONDS)

    def test_success_forgets(self) -> None:
        """A token from the realm for the scope forgets its failures."""
        failures = AuthFailures()
        failures.failed(REALM, SCOPE, reason="down", temporary=True, now=0.0)
        failures.succeeded(REALM, SCOPE)
        assert failures.blocked(REALM, SCOPE, 0.0) is None
        assert failures.failed(REALM, SCOPE, reason="x", temporary=True, now=0.0).in_a_row == 1

    def test_reason_and_temporariness_kept(self) -> None:
        """The remembered failure says why and whether it was temporary."""
        failures = AuthFailures()
        failures.failed(REALM, SCOPE, reason="refused", temporary=False, now=0.0)
        failure = failures.blocked(REALM, SCOPE, 0.5)
        assert failure is not None
        assert (failure.reason, failure.temporary) == ("refused", False)

    def test_bounded(self) -> None:
        """At most MAX_REMEMBERED failures are kept; the oldest goes first."""
        failures = AuthFailures()
        for n in range(MAX_REMEMBERED + 1):
            failures.failed(REALM, f"repository:r{n}:pull", reason="x", temporary=True, now=0.0)
        assert failures.blocked(REALM, "repository:r0:pull", 0.0) is None
        assert failures.blocked(REALM, f"repository:r{MAX_REMEMBERED}:pull", 0.0) is not None
