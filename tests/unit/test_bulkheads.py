"""Bulkheads: fair slot grants (domain/destinations/fair_share), the floor rate
(domain/transfers/pace), job slots given back while waiting (engine/bulkheads) and reads cut below
the floor (engine/paced_reads)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from replicator.domain.destinations.fair_share import Candidate, claim_order, next_grant
from replicator.domain.transfers.pace import SLOW_AFTER_CUTS, Floor, Pace, is_slow
from replicator.engine.bulkheads import QUEUED_BEYOND_SLOTS, DestinationSlots
from replicator.engine.paced_reads import SlowSources, paced
from replicator.errors import SlowTransferError, TransportError
from replicator.registry.held_slots import HELD
from replicator.registry.retry import retried
from replicator.registry.wait_scope import waiting, waits_release


class TestNextGrant:
    """A free slot goes to the first waiter of the source holding the fewest."""

    @pytest.mark.parametrize(
        ("capacity", "held", "waiting", "grant"),
        [
            (4, {}, [], None),
            (4, {"a": 4}, ["b"], None),
            (4, {"a": 3}, ["a", "b"], 1),
            (4, {"a": 2, "b": 1}, ["a", "b", "c"], 2),
            (4, {"a": 1, "b": 1}, ["b", "a"], 0),
            (4, {}, ["a", "a"], 0),
            (2, {"a": 1, "b": 2}, ["c"], None),
        ],
        ids=["nobody-waits", "full", "other-source-first", "fewest-held", "tie-arrival-order",
             "same-source", "over-capacity-after-reload"],
    )  # fmt: skip
    def test_grant(
        self, capacity: int, held: dict[str, int], waiting: list[str], grant: int | None
    ) -> None:
        """next_grant picks the waiter by the fewest slots its source holds, then by arrival."""
        assert next_grant(capacity, held, waiting) == grant


class TestPace:
    """A read must bring the floor's bytes within each window of waiting."""

    @pytest.mark.parametrize(
        ("arrivals", "short"),
        [
            ([(100, 0.5)], False),
            ([(100, 1.0)], True),
            ([(1000, 0.9), (0, 0.9)], False),
            ([(999, 0.9), (0, 0.1)], True),
            ([(500, 0.5), (500, 0.4), (10, 0.99)], False),
        ],
        ids=["within-window", "window-over-short", "new-window-after-its-bytes",
             "short-at-end", "windows-restart"],
    )  # fmt: skip
    def test_short(self, arrivals: list[tuple[int, float]], short: bool) -> None:
        """short() after (bytes, seconds waited) arrivals, floor 1000 B/s over 1 s."""
        pace = Pace(Floor(rate=1000, window=1.0))
        for size, waited in arrivals:
            pace.brought(size, waited)
        assert pace.short() is short

    @pytest.mark.parametrize(("cuts", "slow"), [(0, False), (SLOW_AFTER_CUTS - 1, False),
                                                 (SLOW_AFTER_CUTS, True)])  # fmt: skip
    def test_slow_after_cuts(self, cuts: int, slow: bool) -> None:
        """A source is slow after SLOW_AFTER_CUTS cuts in a row."""
        assert is_slow(cuts) is slow


async def _trickle(pieces: int, pause: float) -> AsyncIterator[bytes]:
    for _ in range(pieces):
        await asyncio.sleep(pause)
        yield b"x"


class TestPaced:
    """A read below the floor is cut; the source is slow after repeated cuts."""

    async def test_cut_below_floor(self) -> None:
        """A source bringing 1 byte every 50 ms, floor 1 KiB/s over 0.2 s: cut, temporary, and
        not a TransportError (a resumable read must not resume after it)."""
        sources = SlowSources()
        with pytest.raises(SlowTransferError, match="below the floor") as cut:
            async for _ in paced(
                _trickle(100, 0.05), Floor(1024, 0.2), host="src:1", sources=sources
            ):
                pass
        assert cut.value.temporary
        assert not isinstance(cut.value, TransportError)
        assert cut.value.host == "src:1"

    async def test_at_pace_passes_and_restores(self) -> None:
        """A read at pace passes every byte and clears the source's cuts."""
        changes: list[tuple[str, int, bool]] = []
        sources = SlowSources(lambda *change: changes.append(change))
        for _ in range(SLOW_AFTER_CUTS):
            sources.cut("src:1")
        assert sources.slow() == ["src:1"]
        got = [c async for c in paced(_trickle(5, 0), Floor(1, 1.0), host="src:1", sources=sources)]
        assert got == [b"x"] * 5
        assert sources.slow() == []
        assert changes[-1] == ("src:1", 0, False)
        assert changes[SLOW_AFTER_CUTS - 1] == ("src:1", SLOW_AFTER_CUTS, True)


class TestDestinationSlots:
    """Job slots: capacity, fairness, given back while waiting."""

    async def test_capacity_and_fair_grant(self) -> None:
        """With every slot held by source a, a queued job of b gets the next free slot before
        a queued job of a that came first."""
        slots = DestinationSlots(capacity=lambda: 2)
        held = [slots.ticket("dst", "a") for _ in range(2)]
        for ticket in held:
            await ticket.__aenter__()
        more_a, b = slots.ticket("dst", "a"), slots.ticket("dst", "b")
        order: list[str] = []

        async def run(ticket: object, name: str) -> None:
            async with ticket:  # type: ignore[attr-defined]
                order.append(name)

        tasks = [asyncio.create_task(run(more_a, "a")), asyncio.create_task(run(b, "b"))]
        await asyncio.sleep(0)
        assert order == []
        await held[0].__aexit__(None, None, None)
        await asyncio.sleep(0.05)
        assert order[:1] == ["b"], "b first, though a queued before it"
        await held[1].__aexit__(None, None, None)
        await asyncio.gather(*tasks)
        assert order == ["b", "a"]
        assert slots.held("dst") == 0

    async def test_saturated_with_one_queued_beyond(self) -> None:
        """A destination takes new jobs until its slots are held and QUEUED_BEYOND_SLOTS more
        wait."""
        slots = DestinationSlots(capacity=lambda: 1)
        first = slots.ticket("dst", "a")
        assert not slots.saturated("dst")
        queued = [slots.ticket("dst", "a") for _ in range(QUEUED_BEYOND_SLOTS)]
        assert slots.saturated("dst")
        for ticket in queued:
            ticket.cancel()
        first.cancel()
        assert slots.held("dst") == 0
        assert not slots.saturated("dst")

    async def test_retry_wait_gives_the_slot_back(self) -> None:
        """A job waiting between tries (retried) does not hold its slot: another job gets it
        meanwhile, and the waiting one takes it again afterwards."""
        slots = DestinationSlots(capacity=lambda: 1)
        waiting, other = slots.ticket("dst", "a"), slots.ticket("dst", "b")
        tries = 0

        async def flaky() -> None:
            nonlocal tries
            tries += 1
            if tries == 1:
                raise TransportError("throttled")

        async def waiter() -> None:
            async with waiting:
                with waits_release(waiting.waiting):
                    await retried(flaky)
                assert slots.held("dst") == 1

        task = asyncio.create_task(waiter())
        async with other:  # granted while the first job waits between its tries
            assert tries == 1
        await task
        assert tries == 2
        assert slots.held("dst") == 0


class TestWaiting:
    """A wait (a backoff, a token fetch) is spent within its job's wait scope."""

    @pytest.mark.parametrize(
        ("scoped", "transfer_held", "released"),
        [(True, False, True), (True, True, False), (False, False, False)],
        ids=["job-waits", "transfer-slot-held", "no-job"],
    )
    async def test_wait_gives_the_slot_back(
        self, scoped: bool, transfer_held: bool, released: bool
    ) -> None:
        """Within a job's scope a wait gives the destination slot back and takes it again
        after; not when the task holds a registry's transfer slot, nor outside a job."""
        slots = DestinationSlots(capacity=lambda: 1)
        job = slots.ticket("dst", "a")
        async with job:
            with contextlib.ExitStack() as stack:
                if scoped:
                    stack.enter_context(waits_release(job.waiting))
                if transfer_held:
                    token = HELD.set(frozenset({"src.example"}))
                    stack.callback(HELD.reset, token)
                async with waiting():
                    assert slots.held("dst") == (0 if released else 1)
                assert slots.held("dst") == 1


class TestClaimOrder:
    """A claim takes turns between the sources of a destination (fair_share.claim_order)."""

    @pytest.mark.parametrize(
        ("candidates", "working", "limit", "claimed"),
        [
            ("aaab", {}, 2, "ab"),
            ("aaab", {"a": 1}, 1, "b"),
            ("aabbc", {}, 3, "abc"),
            ("babab", {"b": 2}, 2, "aa"),
            ("aba", {"a": 1}, 3, "baa"),
            ("aa", {}, 2, "aa"),
            ("", {}, 2, ""),
        ],
        ids=["backlog-and-newcomer", "working-source-waits", "one-each-first",
             "fewest-working-first", "turns-then-age", "one-source", "none"],
    )  # fmt: skip
    def test_claim_order(
        self, candidates: str, working: dict[str, int], limit: int, claimed: str
    ) -> None:
        """Candidates (oldest first, one letter per source, one destination) are taken by
        their turn — working jobs of their source, then their place among its candidates —
        then by age."""
        jobs = [Candidate(n, "dst", source) for n, source in enumerate(candidates)]
        pairs = {("dst", source): count for source, count in working.items()}
        order = claim_order(jobs, pairs, limit)
        assert "".join(candidates[n] for n in order) == claimed

    def test_turns_are_per_destination(self) -> None:
        """A source's jobs at two destinations each have their own first turn."""
        jobs = [Candidate(0, "d1", "a"), Candidate(1, "d1", "a"), Candidate(2, "d2", "a")]
        assert claim_order(jobs, {}, 2) == [0, 2]
