"""Retry policy: Retry-After parsing, the retry predicate, the retry loop (registry/retry.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator import errors
from replicator.registry.retry import (
    RetryPolicy,
    parse_retry_after,
    set_retry_hook,
    under_policy,
    whole,
)
from replicator.registry.retry import retries as retried_by_rule

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)

RETRY_AFTER = [
    ("seconds", "120", 120.0),
    ("zero", "0", 0.0),
    ("padded", "  7 ", 7.0),
    ("large", "86400", 86400.0),
    ("date-future", "Wed, 01 May 2024 12:00:30 GMT", 30.0),
    ("date-far-future", "Thu, 02 May 2024 12:00:00 GMT", 86400.0),
    ("date-now", "Wed, 01 May 2024 12:00:00 GMT", 0.0),
    ("date-past", "Wed, 01 May 2024 11:00:00 GMT", 0.0),
    ("date-long-past", "Sun, 06 Nov 1994 08:49:37 GMT", 0.0),
    ("date-offset", "Wed, 01 May 2024 14:00:45 +0200", 45.0),
    ("date-no-zone", "Wed, 01 May 2024 12:00:10 -0000", 10.0),
    ("none", None, None),
    ("empty", "", None),
    ("blank", "   ", None),
    ("negative", "-5", None),
    ("fraction", "1.5", None),
    ("words", "soon", None),
    ("superscript-digit", "²", None),
    ("arabic-indic-digits", "١٢", None),
    ("bad-date", "Wed, 99 Foo 2024 99:99:99 GMT", None),
]


class TestParseRetryAfter:
    """parse_retry_after(): delta-seconds and HTTP-date, relative to a given `now`."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [case[1:] for case in RETRY_AFTER],
        ids=[case[0] for case in RETRY_AFTER],
    )
    def test_parse(self, value: str | None, expected: float | None) -> None:
        """Seconds are taken as given, dates become seconds from now (0 when past), else None."""
        assert parse_retry_after(value, now=NOW) == expected

    def test_default_now_is_the_clock(self) -> None:
        """Without `now`, a date is measured from the current time."""
        soon = datetime.now(UTC) + timedelta(seconds=100)
        header = soon.strftime("%a, %d %b %Y %H:%M:%S GMT")
        seconds = parse_retry_after(header)
        assert seconds is not None
        assert 90 <= seconds <= 100

    def test_now_in_another_zone(self) -> None:
        """An aware `now` in another zone gives the same answer."""
        eastern = NOW.astimezone(timezone(timedelta(hours=-4)))
        assert parse_retry_after("Wed, 01 May 2024 12:01:00 GMT", now=eastern) == 60.0

    @settings(deadline=None)  # a loaded CI machine can exceed the default 200 ms
    @given(st.text(max_size=60))
    def test_arbitrary_text(self, value: str) -> None:
        """Arbitrary text gives a non-negative number of seconds or None, never an exception."""
        result = parse_retry_after(value, now=NOW)
        assert result is None or result >= 0


def _registry(status: int) -> errors.RegistryError:
    return errors.RegistryError("x", status=status)


PREDICATE = [
    *[(f"registry-{s}", _registry(s), True) for s in (408, 429, 500, 502, 503, 504)],
    *[(f"registry-{s}", _registry(s), False) for s in (400, 401, 403, 404, 405, 409, 412, 416)],
    ("registry-no-status", errors.RegistryError("x"), True),
    ("registry-400-forced-temporary", errors.RegistryError("x", status=400, temporary=True), True),
    ("registry-503-forced-permanent", errors.RegistryError("x", status=503, temporary=False),
     False),
    ("transport", errors.TransportError("reset"), True),
    ("not-found", errors.NotFoundError("x", status=404), False),
    ("auth-401", errors.AuthError("x", status=401), False),
    ("auth-503", errors.AuthError("x", status=503), True),
    ("digest-mismatch", errors.DigestMismatch("x"), False),
    ("manifest", errors.ManifestError("x"), False),
    ("invalid-reference", errors.InvalidReferenceError("x"), False),
    ("config", errors.ConfigError("x"), False),
    ("usage", errors.UsageError("x"), False),
    ("event", errors.EventError("x"), False),
    ("policy-denied", errors.PolicyDenied("x"), False),
    ("bus", errors.BusError("x"), True),
    ("journal", errors.JournalError("x"), True),
    ("schema", errors.SchemaError("x"), False),
    ("transition", errors.TransitionError("x"), False),
    ("value-error", ValueError("x"), False),
    ("os-error", OSError("x"), False),
    ("httpx-connect", httpx.ConnectError("x"), False),
    ("cancelled", KeyboardInterrupt(), False),
]  # fmt: skip


class TestRetryable:
    """errors.retryable(): the one retry predicate."""

    @pytest.mark.parametrize(
        ("exc", "expected"),
        [case[1:] for case in PREDICATE],
        ids=[case[0] for case in PREDICATE],
    )
    def test_retryable(self, exc: BaseException, expected: bool) -> None:
        """Only our temporary errors are retried; library exceptions must be converted first."""
        assert errors.retryable(exc) is expected


@pytest.fixture
def retries() -> Iterator[list[BaseException | None]]:
    """Record retries through the process-wide hook, and remove the hook afterwards."""
    seen: list[BaseException | None] = []
    set_retry_hook(seen.append)
    try:
        yield seen
    finally:
        set_retry_hook(None)


class _Flaky:
    """An operation that raises the given errors in turn, then returns "ok"."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def run(self, attempts: int) -> str:
        async def once() -> str:
            self.calls += 1
            if self.failures:
                raise self.failures.pop(0)
            return "ok"

        return await under_policy(RetryPolicy(attempts=attempts), once)


def _retry_now(status: int) -> errors.RegistryError:
    return errors.RegistryError(f"status {status}", status=status, retry_after=0.0)


class TestRetrying:
    """under_policy(): temporary errors retried with Retry-After honoured, others raised at
    once."""

    async def test_temporary_then_success(self, retries: list[BaseException | None]) -> None:
        """Temporary errors are retried (waiting Retry-After) until the call succeeds."""
        flaky = _Flaky(_retry_now(503), _retry_now(429))
        assert await flaky.run(attempts=3) == "ok"
        assert flaky.calls == 3
        assert [getattr(e, "status", None) for e in retries] == [503, 429]

    async def test_permanent_error_not_retried(self, retries: list[BaseException | None]) -> None:
        """A permanent error is raised on the first attempt."""
        flaky = _Flaky(errors.DigestMismatch("bad bytes"))
        with pytest.raises(errors.DigestMismatch):
            await flaky.run(attempts=5)
        assert flaky.calls == 1
        assert retries == []

    async def test_exhausted_reraises_last_error(self, retries: list[BaseException | None]) -> None:
        """When attempts run out the last error itself is raised, not a tenacity wrapper."""
        flaky = _Flaky(_retry_now(501), _retry_now(502), _retry_now(503))
        with pytest.raises(errors.RegistryError) as info:
            await flaky.run(attempts=2)
        assert flaky.calls == 2
        assert info.value.status == 502
        assert len(retries) == 1


class TestWhichRequestsRetry:
    """retries(): the client's rule of which requests its policy tries again."""

    @pytest.mark.parametrize(
        ("method", "streamed", "retry", "expected"),
        [
            ("GET", False, None, True),
            ("HEAD", False, None, True),
            ("PUT", False, None, False),
            ("POST", False, None, False),
            ("PATCH", False, None, False),
            ("DELETE", False, None, False),
            ("PUT", False, True, True),
            ("DELETE", False, True, True),
            ("GET", False, False, False),
            ("PUT", False, lambda exc: True, True),
            ("PUT", True, True, False),
            ("PATCH", True, None, False),
        ],
        ids=[
            "get", "head", "put-unsaid", "post-unsaid", "patch", "delete-unsaid", "put-idempotent",
            "delete-said", "get-refused", "put-predicate", "streamed-put", "streamed-patch",
        ],
    )  # fmt: skip
    def test_rule(self, method: str, streamed: bool, retry: object, expected: bool) -> None:
        """GET and HEAD by default, others as their caller says, never a streamed body."""
        assert retried_by_rule(method, streamed=streamed, retry=retry) is expected  # type: ignore[arg-type]

    async def test_inside_an_operation_retried_whole_requests_are_tried_once(self) -> None:
        """Within `whole`, a GET is not retried on its own: the operation is."""
        seen: list[bool] = []

        async def operation() -> None:
            seen.append(retried_by_rule("GET", streamed=False))

        await whole(RetryPolicy(), operation)
        assert seen == [False]
        assert retried_by_rule("GET", streamed=False) is True


class TestUnderPolicy:
    """under_policy(): the loop the client runs a request in."""

    async def test_tries_up_to_the_policy_attempts(
        self, retries: list[BaseException | None]
    ) -> None:
        """A request failing with a temporary error is tried `attempts` times in all."""
        calls = 0

        async def failing() -> None:
            nonlocal calls
            calls += 1
            raise _retry_now(503)

        with pytest.raises(errors.RegistryError):
            await under_policy(RetryPolicy(attempts=3), failing)
        assert calls == 3
        assert len(retries) == 2

    async def test_only_narrows_the_temporary_errors_tried_again(
        self, retries: list[BaseException | None]
    ) -> None:
        """With `only`, a temporary error it refuses is raised at the first try."""
        calls = 0

        async def failing() -> None:
            nonlocal calls
            calls += 1
            raise _retry_now(503)

        with pytest.raises(errors.RegistryError):
            await under_policy(RetryPolicy(), failing, only=lambda exc: False)
        assert calls == 1
        assert retries == []

    async def test_an_operation_returning_an_awaitable_is_awaited_on_every_try(
        self, retries: list[BaseException | None]
    ) -> None:
        """A lambda returning a coroutine (how the client passes a request) is awaited on the
        tries after the first as on the first, and its result returned."""
        flaky = _Flaky(_retry_now(503), _retry_now(502))

        async def once() -> str:
            flaky.calls += 1
            if flaky.failures:
                raise flaky.failures.pop(0)
            return "ok"

        def request() -> Awaitable[str]:  # not a coroutine function: returns one
            return once()

        assert await under_policy(RetryPolicy(attempts=3), request) == "ok"
        assert flaky.calls == 3
        assert len(retries) == 2

    async def test_waits_follow_the_tries_numbering(
        self, retries: list[BaseException | None], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The waits between tries double from the policy's base, counted across the bare first
        try and tenacity's later ones (full jitter: each wait at most base * 2**(try - 1))."""
        ceilings: list[float] = []
        monkeypatch.setattr("random.uniform", lambda low, high: ceilings.append(high) or 0.0)

        async def failing() -> None:
            raise errors.RegistryError("status 503", status=503)

        with pytest.raises(errors.RegistryError):
            await under_policy(RetryPolicy(attempts=4, base=1.0, cap=100.0), failing)
        # tenacity also works out a wait after the last try, before it sees the stop: unused
        assert ceilings[:3] == [1.0, 2.0, 4.0]
        assert len(retries) == 3
