"""The registry client's retry policy: which requests are tried again (`retries`), the loop
they are tried in (`under_policy`, tenacity's AsyncRetrying after a bare first try; `whole` for
an operation of several requests), exponential backoff with full jitter, `Retry-After`
honoured."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import ParamSpec, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from replicator.errors import RegistryError, ReplicatorError, retryable
from replicator.logs import get_logger
from replicator.registry.wait_scope import waiting

log = get_logger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

# Attempts within one job run; the journal adds attempts across runs (workers.max_attempts).
DEFAULT_ATTEMPTS = 5
# First backoff ~0.25 s: a registry that blipped is usually back within a second.
BACKOFF_BASE = 0.25
# Cap a single wait at 20 s so one job never sleeps long while holding a worker; longer outages are
# handled by the journal's RETRY_WAIT, which frees the worker.
BACKOFF_CAP = 20.0
# A registry asking for more than this in Retry-After is treated as this: the job goes back to the
# journal's RETRY_WAIT rather than pinning a worker for minutes.
RETRY_AFTER_CAP = 60.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often one registry request is tried: `attempts` in all, temporary errors only, waiting
    a full-jitter backoff from `base` doubling up to `cap` seconds (or the Retry-After asked)."""

    attempts: int = DEFAULT_ATTEMPTS
    base: float = BACKOFF_BASE
    cap: float = BACKOFF_CAP


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP-date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # isdigit() alone takes "²", which float() refuses
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


# Told of every retry (the daemon's metrics count them); set with `set_retry_hook`.
RetryHook = Callable[[BaseException | None], None]
_on_retry: RetryHook | None = None


def set_retry_hook(hook: RetryHook | None) -> None:
    """Install the process-wide retry observer (the daemon's metrics)."""
    global _on_retry  # noqa: PLW0603 - one observer per process, set at start-up
    _on_retry = hook


async def _sleep(seconds: float) -> None:
    """Wait between tries, within the task's wait scope (registry/wait_scope.py)."""
    async with waiting():
        await asyncio.sleep(seconds)


# Requests whose repetition changes nothing at the registry: tried again by default. Any other
# method is tried again only where its caller says it is safe (`retry=True`, each commented).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD"})

# Set while an operation of several requests is retried whole (`whole`): its requests are then
# tried once each, the operation being the one tried again, so tries never multiply.
_WHOLE: ContextVar[bool] = ContextVar("replicator_retried_whole", default=False)


# A narrower rule than "every temporary error" for one request (see manifests.put).
RetryIf = Callable[[ReplicatorError], bool]


def retries(method: str, *, streamed: bool, retry: bool | RetryIf | None = None) -> bool:
    """Whether the client tries a request again under its policy.

    Never when the task is inside an operation retried whole, nor a request whose body is a
    stream (it cannot be sent again: the blob upload's own rule resumes or restarts it,
    registry/blob_uploads.py); else as its caller says (`retry`: yes, no, or for the errors a
    predicate accepts), else GET and HEAD only."""
    if _WHOLE.get() or streamed:
        return False
    if retry is None:
        return method in IDEMPOTENT_METHODS
    return retry is not False


async def under_policy(
    policy: RetryPolicy, operation: Callable[[], Awaitable[T]], *, only: RetryIf | None = None
) -> T:
    """`await operation()`, tried up to `policy.attempts` times while it fails with a temporary
    error (errors.retryable), waiting the policy's backoff or the registry's Retry-After between
    tries, in the task's wait scope (a job's destination slot is given back meanwhile); with
    `only`, just the temporary errors it accepts.

    The first try runs bare: a scan makes thousands of requests and nearly all succeed at once
    (tenacity's loop measured ~27 us a call here, whether or not it retries); the tries after
    a temporary failure run in tenacity's AsyncRetrying."""

    def accepts(exc: BaseException) -> bool:
        return isinstance(exc, ReplicatorError) and retryable(exc) and (only is None or only(exc))

    try:
        return await operation()
    except ReplicatorError as exc:
        if policy.attempts <= 1 or not accepts(exc):
            raise
        wait = _wait_after(exc, 1, policy)
        _before_retry(exc, 1, wait)
    await _sleep(wait)

    # Tenacity numbers the tries it makes from 1; they are the request's tries 2, 3, ...
    def wait_before(state: RetryCallState) -> float:
        return _wait_after(_failure(state), state.attempt_number + 1, policy)

    def before_sleep(state: RetryCallState) -> None:
        _before_retry(_failure(state), state.attempt_number + 1, state.upcoming_sleep)

    retrying = AsyncRetrying(
        retry=retry_if_exception(accepts),
        stop=stop_after_attempt(policy.attempts - 1),
        wait=wait_before,
        before_sleep=before_sleep,
        sleep=_sleep,
        reraise=True,
    )

    # A coroutine function, not `operation` itself: tenacity awaits only what it can tell is
    # one, and `operation` is often a lambda returning an awaitable.
    async def again() -> T:
        return await operation()

    result: T = await retrying(again)
    return result


def _failure(state: RetryCallState) -> ReplicatorError:
    """The error a tenacity try ended with (only ReplicatorErrors are retried: `accepts`)."""
    exc = state.outcome.exception() if state.outcome is not None else None
    if not isinstance(exc, ReplicatorError):
        raise TypeError(f"retried a try that did not fail with a ReplicatorError: {exc!r}")
    return exc


async def whole(policy: RetryPolicy, operation: Callable[[], Awaitable[T]]) -> T:
    """`operation`, several requests that only make sense together (a manifest GET and its body,
    a blob transfer between two registries), retried whole under `policy`; its requests are
    tried once each within. Inside another such operation it runs once."""
    if _WHOLE.get():
        return await operation()
    token = _WHOLE.set(True)
    try:
        return await under_policy(policy, operation)
    finally:
        _WHOLE.reset(token)


async def retried(func: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """`await func(*args, **kwargs)` retried whole under the default policy (`whole`)."""
    return await whole(RetryPolicy(), lambda: func(*args, **kwargs))


def _wait_after(exc: ReplicatorError, attempt: int, policy: RetryPolicy) -> float:
    """The wait before try `attempt + 1`: the Retry-After asked (capped), else full jitter."""
    if isinstance(exc, RegistryError) and exc.retry_after is not None:
        return min(exc.retry_after, RETRY_AFTER_CAP)
    return random.uniform(0, min(policy.cap, policy.base * (2 ** (attempt - 1))))


def _before_retry(exc: ReplicatorError, attempt: int, wait: float) -> None:
    log.info("retrying", attempt=attempt, wait=round(wait, 3), error=str(exc), code=exc.code)
    if _on_retry is not None:
        _on_retry(exc)
