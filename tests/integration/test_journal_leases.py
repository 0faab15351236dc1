"""The fleet's lease in the journal's database, on SQLite and PostgreSQL: one holder at a time,
renewed by it, taken over once expired, handed on at once when released or when its holder is
known dead."""

from __future__ import annotations

import asyncio

import pytest

from replicator.journal.claimers import open_journal

pytestmark = pytest.mark.integration

# Long next to a test's steps: the lease cannot expire by accident between two of them.
TERM = 30.0
# Short enough to wait out in a test.
SHORT = 0.3
# Members asking at once in the race test.
RACERS = 6


async def test_a_dead_holders_lease_is_taken_before_it_expires(journal_url: str) -> None:
    """b takes a's live lease at once when it knows a dead, never when it does not; the lease
    counts as held before (the intake session is expected at the broker)."""
    async with await open_journal(journal_url) as a, await open_journal(journal_url) as b:
        a.claimer, b.claimer = "member-a", "member-b"
        await a.take_lease("fleet", TERM)
        kept, _ = await b.take_lease("fleet", TERM, lambda holder: False)
        assert kept.holder == "member-a"
        taken, held_before = await b.take_lease("fleet", TERM, lambda h: h == "member-a")
        assert (taken.holder, held_before) == ("member-b", True)
        assert (await b.lease("fleet")) == taken
        # b is not dead to itself: its own renewal is a renewal.
        renewed, _ = await b.take_lease("fleet", TERM, lambda h: h == "member-b")
        assert renewed.holder == "member-b"


async def test_one_holder_renewed_then_taken_over_and_released(journal_url: str) -> None:
    """a takes the lease (never held before) and renews it; b is refused while it runs; once
    it expires b takes it (held before); b's release lets a take it again at once."""
    async with await open_journal(journal_url) as a, await open_journal(journal_url) as b:
        a.claimer, b.claimer = "member-a", "member-b"
        first, held_before = await a.take_lease("fleet", SHORT)
        assert (first.holder, held_before) == ("member-a", False)
        assert (await b.take_lease("fleet", TERM))[0].holder == "member-a"
        renewed, held_before = await a.take_lease("fleet", SHORT)
        assert (renewed.holder, held_before) == ("member-a", True)
        await asyncio.sleep(SHORT * 2)
        taken, held_before = await b.take_lease("fleet", TERM)
        assert (taken.holder, held_before) == ("member-b", True)
        assert taken.expires > renewed.expires
        assert (await a.take_lease("fleet", TERM))[0].holder == "member-b"
        assert not await a.release_lease("fleet")
        assert await b.release_lease("fleet")
        again, held_before = await a.take_lease("fleet", TERM)
        assert (again.holder, held_before) == ("member-a", True)


async def test_members_asking_at_once_get_one_holder(journal_url: str) -> None:
    """Six members asking for a free lease at the same moment: all see the same one holder."""
    journals = [await open_journal(journal_url) for _ in range(RACERS)]
    try:
        for number, journal in enumerate(journals):
            journal.claimer = f"member-{number}"
        leases = await asyncio.gather(*(j.take_lease("fleet", TERM) for j in journals))
    finally:
        for journal in journals:
            await journal.close()
    assert len({lease.holder for lease, _ in leases}) == 1
