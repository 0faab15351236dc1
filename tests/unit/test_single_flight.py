"""registry.single_flight: one call per key in flight, its outcome shared by every waiter."""

from __future__ import annotations

import asyncio

import pytest

from replicator.errors import AuthError
from replicator.registry.single_flight import SingleFlight

# Callers at once: more than one, as a copy's first requests are.
CALLERS = 8


class Calls:
    """A call that counts itself and finishes when the test releases it."""

    def __init__(self) -> None:
        self.count = 0
        self.release = asyncio.Event()
        self.error: Exception | None = None

    async def __call__(self) -> str:
        self.count += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return f"token-{self.count}"


async def _started(flights: SingleFlight[str, str]) -> None:
    """Let every task run up to its first wait."""
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(flights) == 1


class TestSingleFlight:
    async def test_concurrent_callers_share_one_call(self) -> None:
        """Eight callers of one key make one call and all get its result."""
        flights: SingleFlight[str, str] = SingleFlight()
        call = Calls()
        tasks = [asyncio.create_task(flights.run("k", call)) for _ in range(CALLERS)]
        await _started(flights)
        call.release.set()
        assert await asyncio.gather(*tasks) == ["token-1"] * CALLERS
        assert call.count == 1
        assert len(flights) == 0

    async def test_other_keys_fly_apart(self) -> None:
        """Callers of two keys make two calls."""
        flights: SingleFlight[str, str] = SingleFlight()
        call = Calls()
        call.release.set()
        await asyncio.gather(flights.run("a", call), flights.run("b", call))
        assert call.count == 2

    async def test_an_error_reaches_every_waiter_and_the_next_call_is_new(self) -> None:
        """The call's error is every waiter's; a later caller calls again."""
        flights: SingleFlight[str, str] = SingleFlight()
        call = Calls()
        call.error = AuthError("token service refused", status=401, temporary=False)
        tasks = [asyncio.create_task(flights.run("k", call)) for _ in range(CALLERS)]
        await _started(flights)
        call.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, AuthError) for r in results)
        assert call.count == 1
        call.error = None
        assert await flights.run("k", call) == "token-2"

    async def test_a_cancelled_waiter_leaves_the_call_alone(self) -> None:
        """Cancelling one waiter neither cancels the call nor the other waiters."""
        flights: SingleFlight[str, str] = SingleFlight()
        call = Calls()
        first = asyncio.create_task(flights.run("k", call))
        waiter = asyncio.create_task(flights.run("k", call))
        await _started(flights)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        call.release.set()
        assert await first == "token-1"
        assert call.count == 1

    async def test_a_cancelled_caller_hands_the_call_to_a_waiter(self) -> None:
        """When the caller making the call is cancelled, a waiter makes it in its place."""
        flights: SingleFlight[str, str] = SingleFlight()
        call = Calls()
        first = asyncio.create_task(flights.run("k", call))
        waiter = asyncio.create_task(flights.run("k", call))
        await _started(flights)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await _started(flights)
        call.release.set()
        assert await waiter == "token-2"
        assert call.count == 2
