"""sleep_until: a pause that any of its events ends early."""

from __future__ import annotations

import asyncio
import time

import pytest

from replicator.engine.pauses import sleep_until

# Long enough that a pause ended by its event is told from one that ran its course on a
# loaded machine; short enough for a unit test.
LONG_SECONDS = 5.0
SHORT_SECONDS = 0.05


class TestSleepUntil:
    async def test_a_set_event_returns_at_once(self) -> None:
        """An event already set ends the pause before it starts, and says so."""
        stop = asyncio.Event()
        stop.set()
        started = time.monotonic()
        assert await sleep_until(LONG_SECONDS, stop)
        assert time.monotonic() - started < LONG_SECONDS / 2

    @pytest.mark.parametrize("count", [1, 2], ids=["one-event", "two-events"])
    async def test_an_event_set_meanwhile_ends_the_pause(self, count: int) -> None:
        """Any of the events set during the pause ends it early, and it says so."""
        events = [asyncio.Event() for _ in range(count)]
        asyncio.get_running_loop().call_later(SHORT_SECONDS, events[-1].set)
        started = time.monotonic()
        assert await sleep_until(LONG_SECONDS, *events)
        assert time.monotonic() - started < LONG_SECONDS / 2

    @pytest.mark.parametrize("count", [1, 2], ids=["one-event", "two-events"])
    async def test_the_time_running_out_says_no_event(self, count: int) -> None:
        """With no event set, the pause lasts its time and says none was set."""
        events = [asyncio.Event() for _ in range(count)]
        started = time.monotonic()
        assert not await sleep_until(SHORT_SECONDS, *events)
        assert time.monotonic() - started >= SHORT_SECONDS * 0.9

    async def test_no_time_waits_for_an_event(self) -> None:
        """None for the time waits for an event however long it takes."""
        stop, soon = asyncio.Event(), asyncio.Event()
        asyncio.get_running_loop().call_later(SHORT_SECONDS, soon.set)
        assert await sleep_until(None, stop, soon)
        assert (soon.is_set(), stop.is_set()) == (True, False)
