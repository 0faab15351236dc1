"""The journal shared by several processes: exclusive claims, and a writer killed mid-stream."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from replicator.domain.jobs import JobKey, JobState
from replicator.journal import EventOutcome
from replicator.journal.claimers import open_journal
from tests.support.journal_fixtures import (
    WRITER_DESTINATIONS,
    journal_program,
    writer_digest,
    writer_keys,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
# Jobs the claimers race for: enough batches that they interleave many times.
CLAIMED_JOBS = 120
CLAIMERS = 3
# Events each writer run must have acknowledged before it is killed, and how many kills.
ACKED_BEFORE_KILL = 25
KILL_ROUNDS = 3
# Each kill round numbers its events from a fresh range so rounds never collide.
ROUND_STRIDE = 1_000_000


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        journal_program(*args),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_concurrent_claimers_never_share_a_job(journal_url: str) -> None:
    """Three processes claiming from one journal each get distinct jobs, all completed once."""
    async with await open_journal(journal_url) as journal:
        keys = [JobKey("use1", "app", writer_digest(n), None, "usw2") for n in range(CLAIMED_JOBS)]
        assert await journal.add_jobs(keys) == CLAIMED_JOBS
    claimers = [_start("claim", journal_url) for _ in range(CLAIMERS)]
    claimed: list[int] = []
    for process in claimers:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        claimed.extend(int(line) for line in out.split())
    duplicates = [job for job, times in Counter(claimed).items() if times > 1]
    assert duplicates == []
    async with await open_journal(journal_url) as journal:
        rows = await journal.jobs(limit=CLAIMED_JOBS + 1)
    assert sorted(claimed) == sorted(row.id for row in rows)
    assert {(row.state, row.attempts) for row in rows} == {(JobState.COMPLETE, 1)}


def _kill_after_acks(url: str, start: int) -> list[int]:
    """Run a writer, SIGKILL it once it acknowledged enough events; the acknowledged numbers."""
    process = _start("write", url, str(start))
    assert process.stdout is not None
    acked: list[int] = []
    try:
        for line in process.stdout:
            acked.append(int(line))
            if len(acked) >= ACKED_BEFORE_KILL:
                break
    finally:
        process.send_signal(signal.SIGKILL)
        rest, err = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, err
    # Lines printed before the kill are commits too; a partial last line is not.
    acked.extend(int(line) for line in rest.splitlines() if line.strip().isdigit())
    assert len(acked) >= ACKED_BEFORE_KILL, err
    return acked


async def test_killed_writer_loses_nothing_committed(journal_url: str) -> None:
    """After kill -9 mid-stream, every acknowledged event and all its jobs are there, whole."""
    acked: list[int] = []
    for round_number in range(KILL_ROUNDS):
        acked += _kill_after_acks(journal_url, round_number * ROUND_STRIDE)
    url = make_url(journal_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        with sqlite3.connect(url.database) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    async with await open_journal(journal_url) as journal:
        events = await journal.events(limit=10**6)
        jobs = await journal.jobs(limit=10**6)
    numbers = [int(event.payload.split()[1]) for event in events]
    assert {event.outcome for event in events} == {EventOutcome.ACCEPTED}
    assert set(acked) <= set(numbers)
    # Atomicity: every recorded event has all its jobs, and no job exists without its event.
    assert Counter(row.key for row in jobs) == Counter(
        key for number in numbers for key in writer_keys(number)
    )
    assert len(jobs) == len(numbers) * len(WRITER_DESTINATIONS)
