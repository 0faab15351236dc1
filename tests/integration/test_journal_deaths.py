"""Process deaths on SQLite and PostgreSQL: counted apart from a job's attempts, only deaths in
a row count, and FAILED jobs whose cause was temporary are retried by code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text
from structlog.testing import capture_logs

from replicator.domain.jobs import TEMPORARY_FAILURES, FailureCode, JobKey, JobState
from replicator.domain.jobs.ends import Failed
from replicator.journal import Journal
from replicator.journal.claimers import open_journal
from replicator.journal.models import SCHEMA_VERSION
from tests.support.old_journals import job_values, write_old_journal

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "a" * 64
LATER = datetime.now(UTC) + timedelta(days=1)


def key(tag: str) -> JobKey:
    """A job of app:<tag> from use1 to usw2."""
    return JobKey("use1", "app", DIGEST, tag, "usw2")


async def claim(journal: Journal, *tags: str) -> None:
    """Claim exactly the jobs of `tags` (the others are held back by not being due)."""
    claimed = await journal.claim_due(10, LATER)
    assert sorted(row.tag or "" for row in claimed) == sorted(tags)


async def states(journal: Journal) -> dict[str | None, tuple[JobState, int]]:
    """Each job's state and deaths in a row, by tag."""
    return {row.tag: (row.state, row.deaths) for row in await journal.jobs()}


class TestDeaths:
    """resume_interrupted(max_deaths=...) judges each death as domain.jobs.after_death says."""

    async def test_a_death_without_the_job_breaks_the_row(self, journal: Journal) -> None:
        """A job in flight at deaths 1 and 3 but not at death 2 (another job was) has one
        death in a row, not two, and is not set aside with max_deaths = 2."""
        await journal.add_jobs([key("a")])
        await claim(journal, "a")
        assert await journal.resume_interrupted(max_deaths=2) == 1  # death 1: a
        await journal.add_jobs([key("b")])
        claimed = await journal.claim_due(1, LATER)  # a is claimed; give it back unharmed
        await journal.end(
            claimed[0].id,
            Failed(
                FailureCode.TRANSPORT_ERROR, "reset", temporary=True, max_attempts=10, backoff=3600
            ),
            now=LATER,
        )
        await claim(journal, "b")
        assert await journal.resume_interrupted(max_deaths=2) == 1  # death 2: b only
        await journal.retry_failed()  # nothing FAILED: a waits in RETRY_WAIT
        assert await states(journal) == {
            "a": (JobState.RETRY_WAIT, 1),
            "b": (JobState.PENDING, 1),
        }

    async def test_without_max_deaths_nothing_is_set_aside(self, journal: Journal) -> None:
        """However many deaths in a row, a caller without max_deaths only resumes."""
        await journal.add_jobs([key("a")])
        for _ in range(5):
            await claim(journal, "a")
            assert await journal.resume_interrupted() == 1
        assert await states(journal) == {"a": (JobState.PENDING, 5)}

    async def test_nothing_in_flight_is_no_death(self, journal: Journal) -> None:
        """A recovery that finds no job in flight numbers no death: the next one that does
        still follows the last one that found the job."""
        await journal.add_jobs([key("a")])
        await claim(journal, "a")
        assert await journal.resume_interrupted(max_deaths=2) == 1
        assert await journal.resume_interrupted(max_deaths=2) == 0
        await claim(journal, "a")
        assert await journal.resume_interrupted(max_deaths=2) == 1
        [row] = await journal.jobs()
        assert (row.state, row.failure_code) == (JobState.FAILED, FailureCode.PROCESS_DIED)


async def test_a_job_set_aside_is_logged_with_its_reason(journal: Journal) -> None:
    """A job set aside for the deaths it was in flight at is logged (job_set_aside, a
    warning) with its image, destination, code and reason, for an operator to act on."""
    await journal.add_jobs([key("a")])
    await claim(journal, "a")
    with capture_logs() as logs:
        assert await journal.resume_interrupted(max_deaths=1) == 1
    [logged] = [line for line in logs if line["event"] == "job_set_aside"]
    assert logged["log_level"] == "warning"
    assert (logged["tag"], logged["destination"], logged["code"]) == (
        "a",
        "usw2",
        FailureCode.PROCESS_DIED,
    )
    assert "the process died once while this job was in flight" in logged["reason"]


async def test_retry_by_code_takes_only_temporary_failures(journal: Journal) -> None:
    """retry_failed(codes=TEMPORARY_FAILURES) re-queues PROCESS_DIED and MAX_ATTEMPTS jobs with
    a fresh count of deaths, and leaves a POLICY_DENIED one FAILED."""
    await journal.add_jobs([key("died")])
    await claim(journal, "died")
    await journal.resume_interrupted(max_deaths=1)
    await journal.add_jobs([key("tired")])
    [tired] = await journal.claim_due(1, LATER)
    await journal.end(
        tired.id,
        Failed(FailureCode.TRANSPORT_ERROR, "reset", temporary=True, max_attempts=1, backoff=0),
        now=LATER,
    )
    await journal.add_jobs([], denied={key("denied"): "no policy"})
    assert await journal.retry_failed(codes=TEMPORARY_FAILURES) == 2
    assert await states(journal) == {
        "died": (JobState.PENDING, 0),
        "tired": (JobState.PENDING, 0),
        "denied": (JobState.FAILED, 0),
    }


async def test_version_4_journal_is_migrated(journal_url: str) -> None:
    """A journal of schema version 4 (no death columns, no death counter) is migrated on open:
    its jobs are kept, with no deaths, and deaths are counted from there."""
    write_old_journal(
        journal_url,
        4,
        [job_values(DIGEST, "kept", "usw2", state="PENDING", finished_at=None,
                    next_attempt_at=LATER - timedelta(days=2))],
    )  # fmt: skip
    async with await open_journal(journal_url) as journal:
        assert await states(journal) == {"kept": (JobState.PENDING, 0)}
        await claim(journal, "kept")
        assert await journal.resume_interrupted(max_deaths=2) == 1
        assert await states(journal) == {"kept": (JobState.PENDING, 1)}
    engine = create_engine(journal_url)
    with engine.connect() as connection:
        version = connection.execute(
            text("SELECT value FROM meta WHERE key = 'schema_version'")
        ).scalar_one()
    engine.dispose()
    assert version == str(SCHEMA_VERSION)
