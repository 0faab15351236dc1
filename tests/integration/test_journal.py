"""The journal on SQLite and PostgreSQL: recording, claiming, failing, recovery, queries, schema."""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from replicator.domain.events.echoes import Write, WriteAction
from replicator.domain.jobs import NO_ORIGIN, FailureCode, JobKey, JobKind, JobState
from replicator.domain.jobs.ends import Completed, CopyCounters, Failed, Superseded
from replicator.errors import ClaimLost, JournalError, SchemaError
from replicator.journal import EventOutcome, Journal
from replicator.journal.claimers import open_journal
from replicator.journal.deferred import Kept
from replicator.journal.event_rows import ReceivedEvent
from replicator.journal.models import MAX_STORED_PAYLOAD_BYTES, SCHEMA_VERSION
from tests.support.journal_fixtures import pushed
from tests.support.old_journals import WRITTEN_AT, job_values, write_old_journal

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "a" * 64
OTHER_DIGEST = "sha256:" + "b" * 64
KEY = JobKey("use1", "app", DIGEST, "v1", "usw2")
KEY_EU = JobKey("use1", "app", DIGEST, "v1", "euw1")
# KEY as the jobs of two push events of the same image (say, v1 = A, then B, then A again).
E1 = replace(KEY, origin="e1")
E3 = replace(KEY, origin="e3")
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


async def record(
    journal: Journal,
    payload: bytes,
    keys: list[JobKey],
    denied: dict[JobKey, str] | None = None,
    outcome: str = "accepted",
    reason: str = "",
    pushed_at: datetime = T0,
    **fields: Any,
) -> list[int]:
    """Record an event from source use1 (pushed at T0 unless told; `fields`: more of
    ReceivedEvent's)."""
    return await journal.record_event(
        pushed(
            payload, keys, pushed_at=pushed_at, outcome=EventOutcome(outcome), reason=reason,
            denied=denied or {}, **fields,
        )
    )  # fmt: skip


async def only_job(journal: Journal, job_id: int) -> JobState:
    """The state of one job."""
    row = await journal.job(job_id)
    assert row is not None
    return row.state


async def claim_one(journal: Journal, now: datetime = T0) -> int:
    """Claim exactly one due job; its id."""
    claimed = await journal.claim_due(10, now)
    assert len(claimed) == 1
    return claimed[0].id


async def complete(journal: Journal, job_id: int, now: datetime | None = None) -> None:
    """Finish a claimed job as copied (at `now`, the clock's time unless told)."""
    await journal.end(
        job_id,
        Completed(CopyCounters(bytes_copied=10, blobs_copied=1)),
        now=now,
    )


async def fail_temporarily(journal: Journal, job_id: int, now: datetime = T0) -> JobState:
    """Fail a claimed job with a temporary transport error, 3 attempts allowed, 30 s backoff."""
    return await journal.end(
        job_id,
        Failed(
            FailureCode.TRANSPORT_ERROR,
            "connection reset",
            temporary=True,
            max_attempts=3,
            backoff=30.0,
        ),
        now=now,
    )


async def fail_permanently(journal: Journal, job_id: int) -> JobState:
    """Fail a claimed job for good with a digest mismatch."""
    return await journal.end(
        job_id,
        Failed(
            FailureCode.DIGEST_MISMATCH,
            "bytes do not match",
            temporary=False,
            max_attempts=3,
            backoff=0.0,
        ),
        now=T0,
    )


class TestRecordEvent:
    """record_event(): one transaction, idempotent jobs."""

    async def test_events_of_one_batch_envelope_are_each_recorded(self, journal: Journal) -> None:
        """The second event of a batch envelope (same payload, part 1) is not a duplicate."""
        other = JobKey("use1", "app", OTHER_DIGEST, "v2", "usw2")
        for part, key in enumerate([KEY, other]):
            await record(journal, b"batch", [key], part=part)
        assert {row.key for row in await journal.jobs()} == {KEY, other}
        assert all(e.outcome is EventOutcome.ACCEPTED for e in await journal.events())

    async def test_same_event_twice_makes_one_job(self, journal: Journal) -> None:
        """A redelivered event creates no second job and is recorded as an ignored duplicate."""
        first = await record(journal, b"push 1", [KEY])
        second = await record(journal, b"push 1", [KEY])
        assert first == second
        assert len(await journal.jobs()) == 1
        newest, oldest = await journal.events()
        assert (oldest.outcome, oldest.jobs_created) == (EventOutcome.ACCEPTED, 1)
        assert newest.outcome is EventOutcome.IGNORED
        assert newest.reason == f"duplicate of event {oldest.id}"
        assert newest.jobs_created == 0

    async def test_new_event_for_a_queued_image_is_its_own_job(self, journal: Journal) -> None:
        """Another push event of an image already being copied is a job of its own (it may
        have to move the tag back), and leaves the running one alone."""
        [first] = await record(journal, b"push 1", [E1])
        await claim_one(journal)
        [second] = await record(journal, b"push 3", [E3])
        assert second != first
        assert await only_job(journal, first) is JobState.IN_PROGRESS
        assert await only_job(journal, second) is JobState.PENDING
        assert (await journal.events())[0].jobs_created == 1

    async def test_same_event_in_another_payload_is_the_same_job(self, journal: Journal) -> None:
        """The same event (same id) redelivered in a re-serialised payload finds its job, even
        FAILED: a redelivery is never new work."""
        [job_id] = await record(journal, b"push 1", [E1])
        await fail_permanently(journal, await claim_one(journal))
        assert await record(journal, b"push 1, re-serialised", [E1]) == [job_id]
        assert await only_job(journal, job_id) is JobState.FAILED
        assert len(await journal.jobs()) == 1

    async def test_new_job_is_pending_with_push_time(self, journal: Journal) -> None:
        """A new job is PENDING, due now, with the push timestamp and no attempt yet."""
        [job_id] = await record(journal, b"push", [KEY])
        row = await journal.job(job_id)
        assert row is not None
        assert (row.state, row.attempts, row.pushed_at, row.key) == (
            JobState.PENDING,
            0,
            T0,
            KEY,
        )
        assert row.next_attempt_at is not None

    async def test_denied_key_is_failed_policy_denied(self, journal: Journal) -> None:
        """A key the policy denies is recorded FAILED with POLICY_DENIED and the reason."""
        allowed, denied = await record(
            journal, b"push", [KEY], denied={KEY_EU: "no Allow for ecr:ReplicateImage"}
        )
        row = await journal.job(denied)
        assert row is not None
        assert (row.state, row.failure_code, row.failure_reason, row.attempts) == (
            JobState.FAILED,
            FailureCode.POLICY_DENIED,
            "no Allow for ecr:ReplicateImage",
            0,
        )
        assert row.finished_at is not None
        assert await only_job(journal, allowed) is JobState.PENDING
        assert (await journal.events())[0].jobs_created == 2

    async def test_new_push_after_a_failure_is_a_new_job(self, journal: Journal) -> None:
        """A new push of an image whose job FAILED makes a fresh PENDING job; the failed one
        stays as it ended."""
        [failed] = await record(journal, b"push 1", [E1])
        await fail_permanently(journal, await claim_one(journal))
        [fresh] = await record(journal, b"push 3", [E3])
        row = await journal.job(fresh)
        assert row is not None
        assert (row.state, row.attempts, row.failure_code, row.key) == (
            JobState.PENDING,
            0,
            None,
            E3,
        )
        assert await only_job(journal, failed) is JobState.FAILED
        assert (await journal.events())[0].jobs_created == 1

    async def test_redelivered_event_does_not_requeue_failed_job(self, journal: Journal) -> None:
        """The same payload delivered again leaves a FAILED job failed (not a new push)."""
        [job_id] = await record(journal, b"push 1", [KEY])
        await fail_permanently(journal, await claim_one(journal))
        await record(journal, b"push 1", [KEY])
        assert await only_job(journal, job_id) is JobState.FAILED

    async def test_rollback_push_of_a_completed_image_is_new_work(self, journal: Journal) -> None:
        """v1 = A, COMPLETE; pushed again with A (after B): a new PENDING job, so the tag is
        moved back at the destination. The COMPLETE job stays COMPLETE."""
        [job_id] = await record(journal, b"push 1", [E1])
        await complete(journal, await claim_one(journal))
        [again] = await record(journal, b"push 3", [E3])
        assert again != job_id
        assert await only_job(journal, job_id) is JobState.COMPLETE
        assert await only_job(journal, again) is JobState.PENDING

    async def test_new_push_still_denied_records_new_reason(self, journal: Journal) -> None:
        """A scan's failed job denied again stays FAILED with the new reason."""
        await journal.add_jobs([], denied={KEY: "old reason"})
        await journal.add_jobs([], denied={KEY: "new reason"})
        [row] = await journal.jobs()
        assert (row.state, row.failure_reason) == (JobState.FAILED, "new reason")

    async def test_each_denied_push_is_recorded(self, journal: Journal) -> None:
        """Two push events denied by the policy are two FAILED jobs, each with its reason."""
        await record(journal, b"push 1", [], denied={E1: "old reason"})
        await record(journal, b"push 3", [], denied={E3: "new reason"})
        rows = await journal.jobs()
        assert {(r.key, r.state, r.failure_reason) for r in rows} == {
            (E1, JobState.FAILED, "old reason"),
            (E3, JobState.FAILED, "new reason"),
        }

    async def test_rejected_event_is_kept_truncated(self, journal: Journal) -> None:
        """A rejected payload is recorded with its reason, cut to the cap, hashed whole."""
        payload = b"x" * (MAX_STORED_PAYLOAD_BYTES + 10)
        assert await record(journal, payload, [], outcome="rejected", reason="not JSON") == []
        [event] = await journal.events(EventOutcome.REJECTED)
        assert (event.outcome, event.reason, event.payload_size) == (
            EventOutcome.REJECTED,
            "not JSON",
            MAX_STORED_PAYLOAD_BYTES + 10,
        )
        assert event.payload == payload[:MAX_STORED_PAYLOAD_BYTES]
        assert event.payload_sha256 == hashlib.sha256(payload).hexdigest()
        assert await journal.jobs() == []

    async def test_rejected_then_accepted_payload_makes_jobs(self, journal: Journal) -> None:
        """Duplicates are judged against accepted events only: a once-rejected payload counts."""
        await record(journal, b"push", [], outcome="rejected", reason="unknown registry")
        assert len(await record(journal, b"push", [KEY])) == 1
        assert (await journal.events())[0].outcome is EventOutcome.ACCEPTED

    async def test_untagged_key_is_unique(self, journal: Journal) -> None:
        """A digest-only key (tag None) is deduplicated like a tagged one and reads back None."""
        untagged = JobKey("use1", "app", DIGEST, None, "usw2")
        first = await record(journal, b"push 1", [untagged, untagged])
        assert await record(journal, b"push 2", [untagged]) == first
        [row] = await journal.jobs()
        assert (row.tag, row.key) == (None, untagged)

    async def test_kinds_are_distinct_jobs(self, journal: Journal) -> None:
        """A DELETE job and a COPY job of the same image are two jobs."""
        delete = JobKey("use1", "app", DIGEST, "v1", "usw2", JobKind.DELETE)
        assert len(set(await record(journal, b"push", [KEY, delete]))) == 2


class TestRecordEventRouting:
    """record_event(): not_before delays and superseded jobs."""

    async def test_not_before_delays_claim(self, journal: Journal) -> None:
        """A job with not_before is not claimable before that time, and is due then."""
        later = T0 + timedelta(seconds=2)
        await record(journal, b"child", [KEY], not_before={KEY: later})
        assert await journal.next_due_at() == later
        assert await journal.claim_due(10, T0) == []
        assert [row.key for row in await journal.claim_due(10, later)] == [KEY]

    async def test_supersede_drops_pending_jobs_only(self, journal: Journal) -> None:
        """Superseded images lose their job while PENDING, whichever event made it (they are
        named by image alone); a started one is left alone."""
        child_a = JobKey("use1", "app", OTHER_DIGEST, None, "usw2", origin="c1")
        child_b = JobKey("use1", "app", OTHER_DIGEST, None, "euw1", origin="c1")
        await record(journal, b"child", [child_a, child_b])
        await journal.claim_due(1, T0)
        superseded = [replace(child_a, origin=NO_ORIGIN), replace(child_b, origin=NO_ORIGIN)]
        await record(journal, b"index", [KEY], supersede=superseded)
        states = {row.key: row.state for row in await journal.jobs()}
        assert states == {child_a: JobState.IN_PROGRESS, KEY: JobState.PENDING}

    async def test_duplicate_supersedes_nothing(self, journal: Journal) -> None:
        """A redelivered index event changes no job, superseded ones included."""
        child = JobKey("use1", "app", OTHER_DIGEST, None, "usw2")
        await record(journal, b"index", [KEY])
        await record(journal, b"child", [child])
        await record(journal, b"index", [KEY], supersede=[child])
        assert len(await journal.jobs()) == 2


class TestAddJobs:
    """add_jobs(): the same insertion without an event."""

    async def test_counts_created_and_requeued(self, journal: Journal) -> None:
        """New keys and re-queued failed ones are counted; existing ones are not."""
        assert await journal.add_jobs([KEY, KEY_EU]) == 2
        assert await journal.add_jobs([KEY, KEY_EU]) == 0
        await fail_permanently(journal, (await journal.claim_due(1, T0))[0].id)
        assert await journal.add_jobs([KEY, KEY_EU]) == 1
        assert await journal.events() == []

    async def test_scan_leaves_an_events_unfinished_job_alone(self, journal: Journal) -> None:
        """A scan (no event) finding an image an event's job is still copying queues nothing:
        the reconcile of a busy daemon does not double its backlog."""
        [job_id] = await record(journal, b"push 1", [E1])
        assert await journal.add_jobs([KEY]) == 0
        assert [row.id for row in await journal.jobs()] == [job_id]

    async def test_scan_after_an_events_job_finished_is_new_work(self, journal: Journal) -> None:
        """A scan finding missing an image whose event job is COMPLETE (the destination lost
        it since) queues a job of its own."""
        await record(journal, b"push 1", [E1])
        await complete(journal, await claim_one(journal))
        assert await journal.add_jobs([KEY]) == 1
        assert {(row.key, row.state) for row in await journal.jobs()} == {
            (E1, JobState.COMPLETE),
            (KEY, JobState.PENDING),
        }

    async def test_denied(self, journal: Journal) -> None:
        """Denied keys are recorded FAILED POLICY_DENIED."""
        assert await journal.add_jobs([], denied={KEY: "cross-account"}) == 1
        [row] = await journal.jobs(JobState.FAILED)
        assert row.failure_code == FailureCode.POLICY_DENIED


class TestClaimAndFinish:
    """claim_due(), complete(), fail()."""

    async def test_claim_moves_to_in_progress(self, journal: Journal) -> None:
        """A claim takes a PENDING job to IN_PROGRESS with one attempt; nobody claims it again."""
        [job_id] = await record(journal, b"push", [KEY])
        [row] = await journal.claim_due(10, T0)
        assert (row.id, row.state, row.attempts, row.started_at) == (
            job_id,
            JobState.IN_PROGRESS,
            1,
            T0,
        )
        assert await journal.claim_due(10, T0) == []

    async def test_claim_respects_limit_oldest_first(self, journal: Journal) -> None:
        """At most `limit` jobs are claimed, the first queued first."""
        keys = [JobKey("use1", "app", DIGEST, f"t{n}", "usw2") for n in range(5)]
        ids = [(await journal.add_jobs([key]), key)[1] for key in keys]
        claimed = await journal.claim_due(2, T0 + timedelta(days=1))
        assert [row.key for row in claimed] == ids[:2]

    @pytest.mark.parametrize(
        ("working", "queued", "limit", "claimed"),
        [
            ([], ["a", "a", "a", "b"], 2, ["a", "b"]),
            (["a"], ["a", "a", "a", "b"], 1, ["b"]),
            ([], ["a", "a", "b", "b", "c"], 3, ["a", "b", "c"]),
            (["b", "b"], ["b", "a", "b", "a"], 2, ["a", "a"]),
            (["a"], ["a", "b", "a"], 3, ["b", "a", "a"]),
            ([], ["a", "a"], 2, ["a", "a"]),
            ([], ["a>d1", "a>d1", "a>d2"], 2, ["a>d1", "a>d2"]),
        ],
        ids=["backlog-and-newcomer", "working-source-waits", "one-each-first",
             "fewest-working-first", "turns-then-age", "one-source", "per-destination"],
    )  # fmt: skip
    async def test_claim_takes_turns_between_sources(
        self,
        journal: Journal,
        working: list[str],
        queued: list[str],
        limit: int,
        claimed: list[str],
    ) -> None:
        """A claim goes by turns between the sources of a destination — a job's turn is its
        place behind its source's working jobs there, then oldest due first — so one source's
        backlog never keeps another source's job waiting behind it."""

        def key(n: int, spec: str) -> JobKey:
            source, _, destination = spec.partition(">")
            return JobKey(source, "app", DIGEST, f"t{n}", destination or "usw2")

        later = T0 + timedelta(days=1)
        for n, spec in enumerate(working):
            await journal.add_jobs([key(n, spec)])
        assert len(await journal.claim_due(len(working) + 1, later)) == len(working)
        for n, spec in enumerate(queued, start=len(working)):
            await journal.add_jobs([key(n, spec)])
        rows = await journal.claim_due(limit, later)
        got = sorted(rows, key=lambda row: row.id)
        names = [
            f"{r.source}>{r.destination}" if r.destination != "usw2" else r.source for r in got
        ]
        assert sorted(names) == sorted(claimed)

    async def test_complete_records_counters(self, journal: Journal) -> None:
        """complete() ends the job COMPLETE with the copy's counters and a finish time."""
        await record(journal, b"push", [KEY])
        job_id = await claim_one(journal)
        await journal.end(
            job_id,
            Completed(
                CopyCounters(bytes_copied=1234, blobs_copied=3, blobs_mounted=1, blobs_skipped=2)
            ),
            now=T0,
        )
        row = await journal.job(job_id)
        assert row is not None
        assert (row.state, row.bytes_copied, row.blobs_copied, row.blobs_mounted) == (
            JobState.COMPLETE,
            1234,
            3,
            1,
        )
        assert (row.blobs_skipped, row.finished_at) == (2, T0)

    async def test_complete_twice_is_illegal(self, journal: Journal) -> None:
        """Completing a COMPLETE job is refused: its claim ended with the first completion."""
        await record(journal, b"push", [KEY])
        job_id = await claim_one(journal)
        await journal.end(
            job_id,
            Completed(),
        )
        with pytest.raises(ClaimLost, match="it is COMPLETE"):
            await journal.end(
                job_id,
                Completed(),
            )

    async def test_fail_unclaimed_is_illegal(self, journal: Journal) -> None:
        """A PENDING job cannot fail: only a claimed one can, by its claimer."""
        [job_id] = await record(journal, b"push", [KEY])
        with pytest.raises(ClaimLost, match="it is PENDING, claimed by nobody"):
            await fail_temporarily(journal, job_id)

    async def test_unknown_job(self, journal: Journal) -> None:
        """Acting on a job id that does not exist raises a permanent JournalError."""
        with pytest.raises(JournalError, match="job 999 does not exist") as info:
            await fail_temporarily(journal, 999)
        assert not info.value.temporary

    async def test_temporary_failure_waits_until_due(self, journal: Journal) -> None:
        """A temporary failure waits `backoff` seconds; the job is claimable only once due."""
        await record(journal, b"push", [KEY])
        job_id = await claim_one(journal)
        assert await fail_temporarily(journal, job_id) is JobState.RETRY_WAIT
        due = T0 + timedelta(seconds=30)
        row = await journal.job(job_id)
        assert row is not None
        assert (row.next_attempt_at, row.failure_code) == (due, FailureCode.TRANSPORT_ERROR)
        assert await journal.next_due_at() == due
        assert await journal.backlog() == 1
        assert await journal.claim_due(10, due - timedelta(seconds=1)) == []
        [again] = await journal.claim_due(10, due)
        assert (again.id, again.attempts, again.state) == (job_id, 2, JobState.IN_PROGRESS)

    async def test_attempts_exhausted_fail_max_attempts(self, journal: Journal) -> None:
        """The third temporary failure of three allowed ends FAILED with MAX_ATTEMPTS."""
        await record(journal, b"push", [KEY])
        now = T0
        for expected in (JobState.RETRY_WAIT, JobState.RETRY_WAIT, JobState.FAILED):
            assert await fail_temporarily(journal, await claim_one(journal, now), now) is expected
            now += timedelta(minutes=1)
        [row] = await journal.jobs()
        assert (row.failure_code, row.attempts) == (FailureCode.MAX_ATTEMPTS, 3)
        assert row.failure_reason == ("gave up after 3 attempts: TRANSPORT_ERROR: connection reset")
        assert await journal.next_due_at() is None

    async def test_permanent_failure(self, journal: Journal) -> None:
        """A permanent failure ends FAILED at once with its own code and reason."""
        await record(journal, b"push", [KEY])
        assert await fail_permanently(journal, await claim_one(journal)) is JobState.FAILED
        [row] = await journal.jobs(JobState.FAILED)
        assert (row.failure_code, row.failure_reason) == (
            FailureCode.DIGEST_MISMATCH,
            "bytes do not match",
        )

    async def test_naive_time_refused(self, journal: Journal) -> None:
        """A naive datetime is a caller bug and is refused before touching the database."""
        with pytest.raises(ValueError, match="naive datetime"):
            await journal.claim_due(1, datetime(2030, 1, 1))


class TestRecovery:
    """resume_interrupted() and retry_failed()."""

    async def test_resume_interrupted(self, journal: Journal) -> None:
        """Jobs left IN_PROGRESS go back to PENDING and can be claimed again; the interrupted
        attempt is not counted (the process died, the job did not fail)."""
        await record(journal, b"push", [KEY, KEY_EU])
        await journal.claim_due(10, T0)
        assert await journal.resume_interrupted() == 2
        assert {row.state for row in await journal.jobs()} == {JobState.PENDING}
        assert [row.attempts for row in await journal.claim_due(10, T0)] == [1, 1]

    async def test_resume_sets_aside_a_job_in_flight_at_every_death(self, journal: Journal) -> None:
        """With max_deaths, a job in flight at that many process deaths in a row ends FAILED
        PROCESS_DIED, its own attempts untouched."""
        await record(journal, b"push", [KEY])
        for _ in range(2):
            await journal.claim_due(10, T0)
            assert await journal.resume_interrupted(max_deaths=3) == 1
        await journal.claim_due(10, T0)
        assert await journal.resume_interrupted(max_deaths=3) == 1
        [row] = await journal.jobs()
        assert (row.state, row.failure_code) == (JobState.FAILED, FailureCode.PROCESS_DIED)
        assert (row.attempts, row.deaths) == (0, 3)
        assert row.failure_reason is not None
        assert "died 3 times in a row" in row.failure_reason

    async def test_resume_started_before(self, journal: Journal) -> None:
        """started_before leaves jobs claimed after it alone (a peer's running jobs)."""
        await journal.add_jobs([KEY])
        await journal.claim_due(1, T0)
        await journal.add_jobs([KEY_EU])
        await journal.claim_due(1, T0 + timedelta(hours=1))
        assert await journal.resume_interrupted(started_before=T0 + timedelta(minutes=1)) == 1
        states = {row.key: row.state for row in await journal.jobs()}
        assert states == {KEY: JobState.PENDING, KEY_EU: JobState.IN_PROGRESS}

    async def test_retry_one_and_all(self, journal: Journal) -> None:
        """retry_failed re-queues one failed job by id, or all; never a job in another state."""
        ids = await record(journal, b"push", [KEY, KEY_EU])
        for job in await journal.claim_due(10, T0):
            await fail_permanently(journal, job.id)
        assert await journal.retry_failed(ids[0]) == 1
        assert await journal.retry_failed(ids[0]) == 0
        assert await journal.retry_failed() == 1
        rows = await journal.jobs()
        assert {(row.state, row.attempts, row.failure_code) for row in rows} == {
            (JobState.PENDING, 0, None)
        }


class TestQueries:
    """status(), jobs(), counts(), backlog(), next_due_at()."""

    async def test_tag_jobs_reads_only_the_tags_asked(self, journal: Journal) -> None:
        """tag_jobs returns the jobs of the tags asked (of one source, or of any) and the
        untagged jobs of the digests asked, not the repository's other tags: a scan reads a
        page of tags at a time."""
        v2 = JobKey("use1", "app", OTHER_DIGEST, "v2", "usw2")
        other_source = JobKey("usw2", "app", OTHER_DIGEST, "v1", "use1")
        await record(journal, b"push 1", [KEY])
        await record(journal, b"push 2", [v2])
        await record(journal, b"push 3", [other_source])
        assert [r.key for r in await journal.tag_jobs("use1", "app", ["v1"])] == [KEY]
        assert [r.key for r in await journal.tag_jobs(None, "app", ["v1"])] == [KEY, other_source]
        assert {r.key for r in await journal.tag_jobs("use1", "app", ["v1", "v2"])} == {KEY, v2}
        assert await journal.tag_jobs("use1", "app", []) == []
        untagged = JobKey("use1", "app", OTHER_DIGEST, None, "usw2")
        await record(journal, b"push 4", [untagged])
        by_digest = await journal.tag_jobs("use1", "app", ["v1"], [OTHER_DIGEST])
        assert [r.key for r in by_digest] == [KEY, untagged]

    async def test_status_by_tag_follows_newest_digest(self, journal: Journal) -> None:
        """A tag resolves to the digest of its newest push, as in ECR."""
        await record(journal, b"push 1", [KEY])
        moved = JobKey("use1", "app", OTHER_DIGEST, "v1", "usw2")
        await record(journal, b"push 2", [moved])
        assert [row.key for row in await journal.status("use1", "app", tag="v1")] == [moved]

    async def test_status_by_tag_after_a_rollback(self, journal: Journal) -> None:
        """v1 = A, then B, then A again: the tag resolves to A, the newest push's digest."""
        await record(journal, b"push 1", [E1])
        await record(
            journal, b"push 2", [JobKey("use1", "app", OTHER_DIGEST, "v1", "usw2", origin="e2")]
        )
        await record(journal, b"push 3", [E3])
        assert {row.digest for row in await journal.status("use1", "app", tag="v1")} == {DIGEST}

    async def test_status_by_tag_skips_superseded_jobs(self, journal: Journal) -> None:
        """B's event, then A's delivered late and SUPERSEDED: the tag resolves to B."""
        b_key = JobKey("use1", "app", OTHER_DIGEST, "v1", "usw2", origin="e2")
        await record(journal, b"push 2", [b_key])
        await complete(journal, await claim_one(journal))
        await record(journal, b"push 1", [E1])
        [late] = await journal.claim_due(10, T0)
        await journal.end(
            late.id,
            Superseded("v1 moved on"),
        )
        assert [row.key for row in await journal.status("use1", "app", tag="v1")] == [b_key]

    async def test_status_by_tag_and_digest(self, journal: Journal) -> None:
        """Tag and digest together: the tag's jobs when it was last pushed with that digest,
        none when it has moved to another."""
        await record(journal, b"push 1", [KEY])
        assert [
            row.key for row in await journal.status("use1", "app", tag="v1", digest=DIGEST)
        ] == [KEY]
        await record(journal, b"push 2", [JobKey("use1", "app", OTHER_DIGEST, "v1", "usw2")])
        assert await journal.status("use1", "app", tag="v1", digest=DIGEST) == []

    async def test_status_by_digest(self, journal: Journal) -> None:
        """By digest: every job of that digest in the repository, any tag."""
        untagged = JobKey("use1", "app", DIGEST, None, "usw2")
        other = JobKey("use1", "other", DIGEST, "v1", "usw2")
        await record(journal, b"push", [KEY, KEY_EU, untagged, other])
        rows = await journal.status(None, "app", digest=DIGEST)
        assert [row.key for row in rows] == [KEY, KEY_EU, untagged]

    async def test_status_source_filter_and_unknown(self, journal: Journal) -> None:
        """Another source's image, or an unknown tag, has no jobs."""
        await record(journal, b"push", [KEY])
        assert await journal.status("use2", "app", digest=DIGEST) == []
        assert await journal.status("use1", "app", tag="nope") == []

    async def test_counts_backlog_and_list(self, journal: Journal) -> None:
        """Counts per (state, destination); backlog counts waiting jobs; jobs() filters."""
        await record(
            journal, b"push", [KEY, KEY_EU], denied={JobKey("use1", "b", DIGEST, None, "x"): "no"}
        )
        await journal.claim_due(1, T0)
        assert await journal.counts() == {
            (JobState.IN_PROGRESS, "usw2"): 1,
            (JobState.PENDING, "euw1"): 1,
            (JobState.FAILED, "x"): 1,
        }
        assert await journal.backlog() == 1
        assert [row.key for row in await journal.jobs(JobState.PENDING)] == [KEY_EU]
        assert len(await journal.jobs(limit=2)) == 2

    async def test_empty(self, journal: Journal) -> None:
        """An empty journal has no backlog and nothing due."""
        assert (await journal.backlog(), await journal.next_due_at()) == (0, None)


class TestRecoveryPoint:
    """oldest_unreplicated: the push time of the oldest push not yet served per destination."""

    async def test_a_failed_job_counts_until_a_later_success_serves_its_tag(
        self, journal: Journal
    ) -> None:
        """A job FAILED (attempts used up) still counts at its push time; a newer push's job of
        the same tag, once COMPLETE, serves the tag and the failed one stops counting."""
        await record(journal, b"push", [KEY])
        assert await fail_permanently(journal, await claim_one(journal)) is JobState.FAILED
        assert await journal.oldest_unreplicated() == {"usw2": T0}
        later = T0 + timedelta(minutes=5)
        await record(journal, b"push again", [replace(KEY, origin="e2")], pushed_at=later)
        assert await journal.oldest_unreplicated() == {"usw2": T0}
        await complete(journal, await claim_one(journal, later), later)
        assert await journal.oldest_unreplicated() == {}

    async def test_retried_failed_job_stops_counting_once_complete(self, journal: Journal) -> None:
        """`retry` of a FAILED job keeps counting it (PENDING), until it is COMPLETE."""
        await record(journal, b"push", [KEY])
        await fail_permanently(journal, await claim_one(journal))
        assert await journal.retry_failed(None) == 1
        assert await journal.oldest_unreplicated() == {"usw2": T0}
        await complete(journal, await claim_one(journal), T0 + timedelta(minutes=1))
        assert await journal.oldest_unreplicated() == {}

    async def test_a_success_of_another_tag_or_destination_serves_nothing(
        self, journal: Journal
    ) -> None:
        """A COMPLETE job of another tag, or of the same tag at another destination, leaves a
        failed job counting."""
        await record(journal, b"push", [KEY])
        await fail_permanently(journal, await claim_one(journal))
        await record(journal, b"others", [replace(KEY, tag="v2"), KEY_EU])
        for row in await journal.claim_due(10, T0):
            await complete(journal, row.id, T0 + timedelta(minutes=1))
        assert await journal.oldest_unreplicated() == {"usw2": T0}

    async def test_a_policy_refusal_is_not_lag(self, journal: Journal) -> None:
        """A push the destination's policy refuses (FAILED POLICY_DENIED) never counts."""
        await record(journal, b"denied", [], denied={KEY: "not allowed"})
        assert await journal.oldest_unreplicated() == {}


class TestSchema:
    """Opening, reopening, and refusing a newer schema."""

    async def test_reopen_keeps_data(self, journal_url: str) -> None:
        """Jobs survive closing and reopening the journal."""
        async with await open_journal(journal_url) as first:
            await first.add_jobs([KEY])
        async with await open_journal(journal_url) as second:
            assert [row.key for row in await second.jobs()] == [KEY]

    async def test_newer_schema_refused(self, journal_url: str) -> None:
        """A journal written by a newer replicator is refused with what to do, and not touched."""
        engine = create_engine(journal_url)
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value TEXT)"))
            newer = SCHEMA_VERSION + 1
            connection.execute(text(f"INSERT INTO meta VALUES ('schema_version', '{newer}')"))
        with pytest.raises(SchemaError, match=rf"schema version {newer}.*run the newer replicator"):
            await open_journal(journal_url)
        with engine.connect() as connection:
            tables = connection.dialect.get_table_names(connection)
        engine.dispose()
        assert tables == ["meta"]

    @pytest.mark.parametrize("version", [1, 2, 3, 4, 5, 6])
    async def test_old_journal_is_migrated(self, journal_url: str, version: int) -> None:
        """A journal of schema version 1 (no jobs.claimed_by), 2 (no retention indexes), 3
        (a job per image and destination, not per event), 4 (no death counts), 5 (no fleet
        indexes) or 6 (no messages kept aside) is migrated on
        open: its jobs are kept as jobs of no event, claims record their process, a new push of
        a COMPLETE image is new work, messages can be kept aside (deferred_messages), the
        daemon's own writes are recorded (own_writes), uploads under way are kept
        (upload_sessions), and the version reads 9."""
        write_old_journal(
            journal_url,
            version,
            [
                job_values(DIGEST, "v1", "usw2"),
                job_values(
                    OTHER_DIGEST,
                    "v2",
                    "usw2",
                    state="PENDING",
                    finished_at=None,
                    next_attempt_at=WRITTEN_AT,
                ),
            ],
        )
        async with await open_journal(journal_url) as journal:
            rows = await journal.jobs()
            assert {(r.key, r.state) for r in rows} == {
                (KEY, JobState.COMPLETE),
                (JobKey("use1", "app", OTHER_DIGEST, "v2", "usw2"), JobState.PENDING),
            }
            assert {r.origin for r in rows} == {NO_ORIGIN}
            [claimed] = await journal.claim_due(1, T0 + timedelta(days=3650))
            assert claimed.claimed_by == journal.claimer
            [again] = await record(journal, b"push 3", [E3])
            assert again not in {r.id for r in rows}
            await journal.defer_message(
                Kept("registry/use1/events", "use1", b"quay", "f" * 64, 1, T0, "v1: 503")
            )
            [kept] = await journal.claim_deferred(5, T0, T0 + timedelta(minutes=5))
            assert (kept.payload, kept.attempts) == (b"quay", 1)
            await journal.record_writes([Write("usw2", "app", WriteAction.PUSH, DIGEST, "v1")])
            [own] = await journal.own_writes("usw2", "app", datetime.now(UTC) - timedelta(1))
            assert (own.digest, own.tag) == (DIGEST, "v1")
            await journal.keep_upload(("usw2", "app", DIGEST), "http://r/v2/app/uploads/1", 7)
            assert await journal.kept_upload(("usw2", "app", DIGEST)) == (
                "http://r/v2/app/uploads/1",
                7,
            )
        engine = create_engine(journal_url)
        with engine.connect() as connection:
            found = connection.execute(
                text("SELECT value FROM meta WHERE key = 'schema_version'")
            ).scalar_one()
        engine.dispose()
        assert found == str(SCHEMA_VERSION) == "9"

    async def test_closed_journal_refuses(self, journal_url: str) -> None:
        """A closed journal raises instead of hanging; closing twice is harmless."""
        opened = await open_journal(journal_url)
        await opened.close()
        await opened.close()
        with pytest.raises(JournalError, match="closed"):
            await opened.jobs()


async def test_sqlite_is_wal(tmp_path: object) -> None:
    """A SQLite journal is in WAL mode."""
    path = f"{tmp_path}/wal.db"
    async with await open_journal(f"sqlite:///{path}"):
        pass
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_unopenable_url(tmp_path: object) -> None:
    """A SQLite path in a missing folder raises JournalError naming the URL."""
    with pytest.raises(JournalError, match="no-such-dir"):
        await open_journal(f"sqlite:///{tmp_path}/no-such-dir/journal.db")


class TestOwnWrites:
    """The daemon's own writes at destinations, kept for their echoes."""

    async def test_written_read_back_per_place_and_window(self, journal: Journal) -> None:
        """Writes are read back for their registry and repository, within the window asked."""
        await journal.record_writes(
            [
                Write("usw2", "app", WriteAction.PUSH, DIGEST, "v1"),
                Write("usw2", "app", WriteAction.PUSH, OTHER_DIGEST),
                Write("usw2", "other", WriteAction.DELETE, DIGEST),
                Write("euw1", "app", WriteAction.PUSH, DIGEST, "v1"),
            ]
        )
        now = datetime.now(UTC)
        found = await journal.own_writes("usw2", "app", now - timedelta(minutes=1))
        assert sorted((w.action, w.digest, w.tag, w.echoed) for w in found) == [
            (WriteAction.PUSH, DIGEST, "v1", False),
            (WriteAction.PUSH, OTHER_DIGEST, None, False),
        ]
        assert await journal.own_writes("usw2", "app", now + timedelta(minutes=1)) == []

    async def test_echo_marks_its_write_and_a_redelivery_is_a_duplicate(
        self, journal: Journal
    ) -> None:
        """An event recorded as the echo of a write marks the write echoed, makes no job, and
        the same message again is a duplicate (it never becomes a push)."""
        await journal.record_writes([Write("use1", "app", WriteAction.PUSH, DIGEST, "v1")])
        [write] = await journal.own_writes("use1", "app", datetime.now(UTC) - timedelta(1))
        echo = ReceivedEvent(
            source="use1", topic="registry/use1/events", payload=b"echo",
            outcome=EventOutcome.ECHO, reason="echo of the daemon's own push", echoes=[write.id],
        )  # fmt: skip
        assert await journal.record_event(echo) == []
        [marked] = await journal.own_writes("use1", "app", datetime.now(UTC) - timedelta(1))
        assert marked.echoed
        assert await record(journal, b"echo", [KEY]) == []
        assert await journal.jobs() == []
        outcomes = [e.outcome for e in await journal.events()]
        assert outcomes == [EventOutcome.IGNORED, EventOutcome.ECHO]

    async def test_pruned_with_the_retention(self, journal: Journal) -> None:
        """Writes older than the retention go with the events and jobs."""
        await journal.record_writes([Write("usw2", "app", WriteAction.PUSH, DIGEST, "v1")])
        pruned = await journal.prune(datetime.now(UTC) + timedelta(seconds=1), 100)
        assert pruned.writes == 1
        assert await journal.own_writes("usw2", "app", T0 - timedelta(days=3650)) == []


class TestUploadSessions:
    """Blob uploads under way at destinations, kept so a restarted daemon goes on with them."""

    PLACE = ("usw2", "app", DIGEST)

    async def test_kept_moved_on_and_forgotten(self, journal: Journal) -> None:
        """An upload is kept with its URL and offset, moved on as the registry acknowledges
        more, read per (destination, repository, digest), and forgotten."""
        assert await journal.kept_upload(self.PLACE) is None
        await journal.keep_upload(self.PLACE, "http://r/v2/app/blobs/uploads/1?_state=a", 0)
        await journal.keep_upload(self.PLACE, "http://r/v2/app/blobs/uploads/1?_state=b", 3 * 2**32)
        assert await journal.kept_upload(self.PLACE) == (
            "http://r/v2/app/blobs/uploads/1?_state=b",
            3 * 2**32,
        )
        assert await journal.kept_upload(("euw1", "app", DIGEST)) is None
        await journal.forget_upload(self.PLACE)
        assert await journal.kept_upload(self.PLACE) is None

    async def test_pruned_with_the_retention(self, journal: Journal) -> None:
        """An upload kept longer than the retention goes with the events and jobs."""
        await journal.keep_upload(self.PLACE, "http://r/v2/app/blobs/uploads/1", 5)
        pruned = await journal.prune(datetime.now(UTC) + timedelta(seconds=1), 100)
        assert pruned.uploads == 1
        assert await journal.kept_upload(self.PLACE) is None
