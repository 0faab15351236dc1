"""Orphans told from live work by the claimer each job records: real processes of this host,
on SQLite and PostgreSQL journals."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from replicator.domain.fleet.claims import Claimer
from replicator.domain.jobs import FailureCode, JobKey, JobState
from replicator.domain.jobs.ends import Completed, CopyCounters, Failed
from replicator.errors import ClaimLost
from replicator.journal import Journal
from replicator.journal.claimers import open_journal, process_start, resume_orphans, this_process
from replicator.journal.models import MAX_CLAIMER_CHARS

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "c" * 64
# Longer than any test here: the "live" claimer is a sleeping process killed at teardown.
SLEEP_SECONDS = "300"
# An hour ago: the age rule of a backfill; none of the jobs here was claimed that long ago.
LONG_AGO = timedelta(hours=1)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process of this host that stays alive through the test."""
    process = subprocess.Popen(["sleep", SLEEP_SECONDS])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def claimer_of(pid: int) -> Claimer:
    """The claimer id process `pid` of this host and namespace would record."""
    start = process_start(pid)
    assert start is not None
    here = this_process()
    return Claimer(here.host, here.namespace, pid, start)


def dead_claimer() -> Claimer:
    """The claimer id of a process of this host that has exited."""
    process = subprocess.Popen(["sleep", SLEEP_SECONDS])
    claimer = claimer_of(process.pid)
    process.kill()
    process.wait()
    return claimer


async def claim_as(journal: Journal, claimer: str, repository: str) -> int:
    """Add one job and claim it in the name of `claimer`; its id."""
    await journal.add_jobs([JobKey("use1", repository, DIGEST, "v1", "usw2")])
    journal.claimer = claimer
    [row] = await journal.claim_due(1, datetime.now(UTC))
    assert row.claimed_by == claimer
    return row.id


async def states(journal: Journal) -> dict[str, JobState]:
    """Each job's state by repository."""
    return {row.repository: row.state for row in await journal.jobs()}


class TestResumeOrphans:
    """Dead local claimers give their jobs back at once; live ones keep them."""

    async def test_dead_local_claimer_resumed_live_one_kept(
        self, journal: Journal, sleeper: subprocess.Popen[bytes]
    ) -> None:
        """With the age rule of a backfill (an hour), a killed process's job is re-queued now,
        a running process's and another host's recent ones stay IN_PROGRESS."""
        await claim_as(journal, str(dead_claimer()), "dead")
        await claim_as(journal, str(claimer_of(sleeper.pid)), "alive")
        await claim_as(journal, "db9/pid:[1]/4242/1", "remote")
        resumed = await resume_orphans(
            journal, started_before=datetime.now(UTC) - LONG_AGO, max_deaths=None
        )
        assert resumed == 1
        assert await states(journal) == {
            "dead": JobState.PENDING,
            "alive": JobState.IN_PROGRESS,
            "remote": JobState.IN_PROGRESS,
        }

    async def test_alone_resumes_all_but_live_local_claimers(
        self, journal: Journal, sleeper: subprocess.Popen[bytes]
    ) -> None:
        """A daemon alone on its journal (no age rule) resumes every job but those a running
        process of this host holds (a backfill sharing the journal)."""
        await claim_as(journal, str(claimer_of(sleeper.pid)), "alive")
        await claim_as(journal, "db9/pid:[1]/4242/1", "remote")
        await claim_as(journal, str(dead_claimer()), "dead")
        assert await resume_orphans(journal, started_before=None, max_deaths=None) == 2
        assert await states(journal) == {
            "dead": JobState.PENDING,
            "alive": JobState.IN_PROGRESS,
            "remote": JobState.PENDING,
        }

    async def test_pid_reused_counts_as_dead(self, journal: Journal) -> None:
        """A claimer whose pid now runs a process started at another moment is dead."""
        here = this_process()
        reused = Claimer(here.host, here.namespace, here.pid, "0")
        await claim_as(journal, str(reused), "reused")
        resumed = await resume_orphans(
            journal, started_before=datetime.now(UTC) - LONG_AGO, max_deaths=None
        )
        assert resumed == 1


COUNTERS = CopyCounters(bytes_copied=1, blobs_copied=1)


class TestClaimFence:
    """A worker finishes or fails only a job its claim still holds."""

    async def test_stale_claimer_cannot_finish_a_job_claimed_again(self, journal_url: str) -> None:
        """A job re-queued while its first claimer still copies, then claimed by a peer: the
        first claimer's COMPLETE and FAIL are refused (ClaimLost) and change nothing; the
        peer's COMPLETE lands, so the job completes once."""
        async with (
            await open_journal(journal_url) as first,
            await open_journal(journal_url) as peer,
        ):
            first.claimer, peer.claimer = "host-a/m:pid:[1]/10/1", "host-b/m:pid:[1]/20/1"
            stale = await claim_as(first, first.claimer, "fenced")
            [stale_row] = await first.jobs()
            assert await peer.resume_interrupted(dead=[first.claimer]) == 1
            [held] = await peer.claim_due(1, datetime.now(UTC))
            assert held.id == stale
            with pytest.raises(ClaimLost, match="claimed by host-b"):
                await first.end(stale, Completed(COUNTERS), claimed_at=stale_row.started_at)
            with pytest.raises(ClaimLost):
                await first.end(
                    stale,
                    Failed(
                        FailureCode.TRANSPORT_ERROR,
                        "stale",
                        temporary=True,
                        max_attempts=5,
                        backoff=1.0,
                    ),
                    now=datetime.now(UTC),
                )
            assert (await peer.jobs())[0].state is JobState.IN_PROGRESS
            await peer.end(stale, Completed(COUNTERS), claimed_at=held.started_at)
            [done] = await peer.jobs()
        assert done.state is JobState.COMPLETE
        assert done.claimed_by == "host-b/m:pid:[1]/20/1"

    async def test_same_claimer_claiming_again_fences_its_older_claim(
        self, journal: Journal
    ) -> None:
        """A job re-queued and claimed again by the same process (another host's sweep took
        it for an orphan): the write of the older claim, told by its claim time, is refused."""
        job = await claim_as(journal, journal.claimer, "again")
        [older] = await journal.jobs()
        assert await journal.resume_interrupted(dead=[journal.claimer]) == 1
        [newer] = await journal.claim_due(1, datetime.now(UTC))
        assert newer.started_at != older.started_at
        with pytest.raises(ClaimLost):
            await journal.end(job, Completed(COUNTERS), claimed_at=older.started_at)
        await journal.end(job, Completed(COUNTERS), claimed_at=newer.started_at)
        assert (await journal.jobs())[0].state is JobState.COMPLETE


def test_longest_claimer_id_fits_its_column() -> None:
    """The id of a process on a host with a 253-character name, the largest pid and start
    values, fits jobs.claimed_by (PostgreSQL would refuse a longer string)."""
    longest = Claimer(
        "h" * 253, "m" * 32 + ":pid:[4294967295]", 4_194_304, "b" * 36 + ":" + "9" * 20
    )
    assert len(str(longest)) <= MAX_CLAIMER_CHARS
