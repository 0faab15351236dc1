"""A fleet member's role (daemon/fleet.FleetRole) on a real journal shared by two members: one
holder at a time, handed on at once when the holder stops, given up before it could expire
when the holder can no longer renew it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from replicator.daemon.fleet import GIVE_UP_MARGIN_SECONDS, LEASE_SECONDS, RENEW_SECONDS, FleetRole
from replicator.journal.claimers import open_journal

pytestmark = pytest.mark.integration

# A loaded machine runs a timer this much late at most, in these tests.
SLACK_SECONDS = 1.0
# A role takes a free lease at its first question; a loaded machine gets a few seconds.
TAKE_SECONDS = 10.0


async def wait_until(check: Callable[[], bool], seconds: float) -> float:
    """Poll `check()` until true; the seconds it took (TimeoutError past `seconds`)."""
    started = time.monotonic()
    async with asyncio.timeout(seconds):
        while not check():
            await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_one_holder_then_handed_on_at_stop(journal_url: str) -> None:
    """Of two members asking, one holds the duty; when it stops, the other holds it within a
    renewal period, never both at once."""
    async with await open_journal(journal_url) as a, await open_journal(journal_url) as b:
        a.claimer, b.claimer = "member-a", "member-b"
        first, second = FleetRole(a, "chores", alone=False), FleetRole(b, "chores", alone=False)
        stop_first, stop_second = asyncio.Event(), asyncio.Event()
        both: list[bool] = []
        async with asyncio.TaskGroup() as group:
            group.create_task(first.keep(stop_first))
            await wait_until(first.holds, TAKE_SECONDS)
            group.create_task(second.keep(stop_second))
            await asyncio.sleep(RENEW_SECONDS * 2)
            both.append(first.holds() and second.holds())
            assert not second.holds()
            stop_first.set()
            await wait_until(second.holds, RENEW_SECONDS + TAKE_SECONDS)
            both.append(first.holds() and second.holds())
            stop_second.set()
        assert both == [False, False]


async def test_a_holder_that_cannot_renew_gives_up_before_expiry(journal_url: str) -> None:
    """A holder whose journal refuses every renewal drops its duty before its lease could
    expire, so the member taking it over never overlaps it."""
    async with await open_journal(journal_url) as b:
        a = await open_journal(journal_url)
        a.claimer, b.claimer = "member-a", "member-b"
        first, second = FleetRole(a, "chores", alone=False), FleetRole(b, "chores", alone=False)
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(first.keep(stop))
            await wait_until(first.holds, TAKE_SECONDS)
            await a.close()  # every renewal now fails
            group.create_task(second.keep(stop))
            gave_up = await wait_until(lambda: not first.holds(), LEASE_SECONDS + TAKE_SECONDS)
            assert not second.holds()
            await wait_until(second.holds, LEASE_SECONDS + TAKE_SECONDS)
            stop.set()
    assert gave_up <= LEASE_SECONDS - GIVE_UP_MARGIN_SECONDS + SLACK_SECONDS
