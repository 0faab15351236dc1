"""The retry policy: tenacity, exponential backoff with full jitter, `Retry-After` honoured."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
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


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, RegistryError) and exc.retry_after is not None:
        return min(exc.retry_after, RETRY_AFTER_CAP)
    exponent = max(0, state.attempt_number - 1)
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * (2**exponent)))


def _before_sleep(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.info(
        "retrying",
        attempt=state.attempt_number,
        wait=round(state.upcoming_sleep, 3),
        error=str(exc),
        code=getattr(exc, "code", None),
    )
    if _on_retry is not None:
        _on_retry(exc)


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


def retrying(attempts: int = DEFAULT_ATTEMPTS) -> AsyncRetrying:
    """An AsyncRetrying for temporary errors only, re-raising the last error when exhausted."""
    return AsyncRetrying(
        retry=retry_if_exception(retryable),
        stop=stop_after_attempt(attempts),
        wait=_wait,
        before_sleep=_before_sleep,
        sleep=_sleep,
        reraise=True,
    )


async def retried(func: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """`await func(*args, **kwargs)` under the retry policy (temporary errors retried).

    The first call runs bare: a scan makes thousands of requests and nearly all succeed at
    once, so tenacity's machinery is entered only after a temporary failure.
    """
    try:
        return await func(*args, **kwargs)
    except ReplicatorError as exc:
        if not exc.temporary:
            raise
        _before_retry(exc)
        await _sleep(_first_wait(exc))
    async for attempt in retrying(DEFAULT_ATTEMPTS - 1):
        with attempt:
            return await func(*args, **kwargs)
    raise AssertionError("unreachable: tenacity re-raises the last error")


def _first_wait(exc: ReplicatorError) -> float:
    if isinstance(exc, RegistryError) and exc.retry_after is not None:
        return min(exc.retry_after, RETRY_AFTER_CAP)
    return random.uniform(0, BACKOFF_BASE)


def _before_retry(exc: ReplicatorError) -> None:
    log.info("retrying", attempt=1, error=str(exc), code=exc.code)
    if _on_retry is not None:
        _on_retry(exc)
