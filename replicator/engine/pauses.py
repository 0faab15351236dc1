"""Pauses a stop can end early: the daemon's loops (sweeps, probes, leases, pruning, reconcile)
and a run's polls sleep between passes, and must wake at once when told to stop or to go on.

    if await sleep_until(PRUNE_INTERVAL_SECONDS, stop):
        return  # stopped
"""

from __future__ import annotations

import asyncio
import contextlib


async def sleep_until(seconds: float | None, *events: asyncio.Event) -> bool:
    """Sleep `seconds` (None: until an event), ending early once any of `events` is set;
    whether one is set."""
    if any(event.is_set() for event in events):
        return True
    if len(events) == 1:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await events[0].wait()
        return events[0].is_set()
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return any(event.is_set() for event in events)
