"""A backfill run's jobs followed to their end (scan/run_jobs.py): totals per destination, a
bounded number of rows kept (those that need a look first), keys forgotten once their job ends."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from replicator.domain.jobs import FailureCode, JobKey, JobKind, JobState
from replicator.journal.models import JobRow
from replicator.scan.run_jobs import DestinationTotals, JobTotals, RunJobs

NOW = datetime(2026, 12, 7, tzinfo=UTC)
DIGEST = "sha256:" + "a" * 64


def _row(tag: str, state: JobState, *, destination: str = "dst", code: str | None = None,
         size: int = 0, job: int = 1) -> JobRow:  # fmt: skip
    return JobRow(
        id=job, kind=JobKind.COPY, source="src", repository="app", digest=DIGEST, tag=tag,
        destination=destination, state=state, attempts=1, next_attempt_at=None,
        failure_code=code, failure_reason=None, bytes_copied=size, blobs_copied=0,
        blobs_mounted=0, blobs_skipped=0, pushed_at=None, created_at=NOW, updated_at=NOW,
        started_at=None, finished_at=None,
    )  # fmt: skip


DENIED = FailureCode.POLICY_DENIED.value


class TestJobTotals:
    """How an ended job is counted."""

    @pytest.mark.parametrize(
        ("state", "code", "expected"),
        [
            (JobState.COMPLETE, None, DestinationTotals(complete=1, bytes=7)),
            (JobState.SUPERSEDED, None, DestinationTotals(complete=1, bytes=7)),
            (JobState.FAILED, "REGISTRY_ERROR", DestinationTotals(failed=1)),
            (JobState.FAILED, DENIED, DestinationTotals(denied=1)),
            (JobState.RETRY_WAIT, "INTERRUPTED", DestinationTotals(unfinished=1)),
            (JobState.PENDING, None, DestinationTotals(unfinished=1)),
        ],
        ids=["complete", "superseded", "failed", "denied", "interrupted", "pending"],
    )
    def test_counted_by_how_it_ended(
        self, state: JobState, code: str | None, expected: DestinationTotals
    ) -> None:
        """Complete and superseded count as complete with their bytes, a denial apart from a
        failure, anything else as unfinished."""
        totals = JobTotals()
        totals.add(_row("v1", state, code=code, size=7))
        assert totals.destinations == {"dst": expected}
        assert totals.jobs == 1
        assert totals.failed == expected.failed
        assert totals.denied == expected.denied

    def test_rows_kept_are_bounded_and_those_needing_a_look_win(self) -> None:
        """Past `reported` rows, a failed or denied row takes a complete row's place, and
        what is not kept is counted as unlisted."""
        totals = JobTotals(reported=3)
        for index in range(5):
            totals.add(_row(f"ok{index}", JobState.COMPLETE, job=index))
        totals.add(_row("bad", JobState.FAILED, code="REGISTRY_ERROR", job=10))
        totals.add(_row("no", JobState.FAILED, code=DENIED, job=11))
        assert [r.tag for r in totals.rows] == ["bad", "no", "ok0"]
        totals.add(_row("bad2", JobState.FAILED, code="REGISTRY_ERROR", job=12))
        totals.add(_row("bad3", JobState.FAILED, code="REGISTRY_ERROR", job=13))
        assert [r.tag for r in totals.rows] == ["bad", "no", "bad2"]
        assert totals.jobs == 9
        assert totals.unlisted == 6
        assert totals.destinations["dst"] == DestinationTotals(complete=5, failed=3, denied=1)


class FakeRows:
    """The journal's rows by tag, as a run reads them (the transport boundary of this unit)."""

    def __init__(self) -> None:
        self.rows: dict[str, JobRow] = {}
        self.asked: list[int] = []

    async def tag_jobs(
        self,
        source: str | None,
        repository: str,
        tags: Sequence[str],
        digests: Sequence[str] = (),
    ) -> list[JobRow]:
        self.asked.append(len(tags))
        await asyncio.sleep(0)  # a query: other tasks run meanwhile
        return [self.rows[t] for t in tags if t in self.rows]


def _key(tag: str) -> JobKey:
    return JobKey("src", "app", DIGEST, tag, "dst", JobKind.COPY)


class TestRunJobs:
    """A run forgets the key of a job once it has ended, and asks the journal a page at a time."""

    async def test_ended_jobs_are_counted_and_forgotten(self) -> None:
        """settle() counts the ended jobs, returns the open ones and keeps only their keys;
        a key without a row is forgotten uncounted; close() counts what is still open."""
        journal = FakeRows()
        jobs = RunJobs(journal, window=2)
        jobs.add([_key("a"), _key("b"), _key("c"), _key("gone")])
        assert jobs.full
        journal.rows = {
            "a": _row("a", JobState.COMPLETE),
            "b": _row("b", JobState.IN_PROGRESS),
            "c": _row("c", JobState.FAILED, code="REGISTRY_ERROR"),
        }
        still = await jobs.settle()
        assert [r.tag for r in still] == ["b"]
        assert jobs.open == 1
        assert not jobs.full
        assert jobs.totals.destinations["dst"] == DestinationTotals(complete=1, failed=1)
        await jobs.close()
        assert jobs.open == 0
        assert jobs.totals.destinations["dst"].unfinished == 1

    async def test_settles_at_once_count_each_job_once(self) -> None:
        """Several repositories waiting for ends at once (their settles concurrent) count each
        ended job once and forget each key once."""
        journal = FakeRows()
        jobs = RunJobs(journal)
        keys = [_key(f"t{i}") for i in range(2_500)]
        jobs.add(keys)
        journal.rows = {k.tag or "": _row(k.tag or "", JobState.COMPLETE) for k in keys}
        results = await asyncio.gather(*(jobs.settle() for _ in range(4)))
        assert results == [[], [], [], []]
        assert jobs.open == 0
        assert jobs.totals.jobs == 2_500

    async def test_asks_a_page_of_keys_at_a_time(self) -> None:
        """2,500 open keys are asked for in queries of at most 1,000 tags."""
        journal = FakeRows()
        jobs = RunJobs(journal)
        jobs.add([_key(f"t{i}") for i in range(2_500)])
        await jobs.settle()
        assert journal.asked == [1_000, 1_000, 500]
        assert jobs.open == 0
