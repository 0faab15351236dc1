"""Retention on SQLite and PostgreSQL: old events and finished jobs pruned in batches, the
queue and recent history kept, and the schema migration that indexes them by age."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, insert, inspect, text, update

from replicator.daemon.pruning import PRUNE_BATCH_ROWS, prune_forever, prune_once
from replicator.domain.jobs import FailureCode, JobKey, JobState
from replicator.domain.jobs.ends import Completed, CopyCounters, Failed
from replicator.journal import EventOutcome, Journal
from replicator.journal.claimers import open_journal
from replicator.journal.event_rows import ReceivedEvent
from replicator.journal.models import SCHEMA_VERSION, EventRecord
from replicator.journal.retention import Pruned
from tests.support.old_journals import event_values, job_values, write_old_journal

pytestmark = pytest.mark.integration

RETENTION_DAYS = 30.0
NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=RETENTION_DAYS + 1)
RECENT = NOW - timedelta(days=RETENTION_DAYS - 1)
EVENTS = EventRecord.metadata.tables["events"]
# The jobs' route (use1 -> usw2) as part of an active-active pair.
BOTH_WAYS = frozenset({("use1", "usw2"), ("usw2", "use1")})


def key(tag: str, origin: str = "") -> JobKey:
    """A job of app:<tag> from use1 to usw2, of the event `origin` (none: a scan's)."""
    return JobKey("use1", "app", "sha256:" + "a" * 64, tag, "usw2", origin=origin)


async def record(journal: Journal, payload: bytes) -> None:
    """Record an ignored event with `payload`."""
    await journal.record_event(
        ReceivedEvent(
            source="use1",
            topic="registry/use1/events",
            payload=payload,
            outcome=EventOutcome.IGNORED,
            reason="pull",
        )
    )


def age_events(url: str, received_at: datetime) -> None:
    """Make every recorded event look received at `received_at`."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(update(EVENTS).values(received_at=received_at))
    engine.dispose()


async def finish(
    journal: Journal, tag: str, *, at: datetime, failed: bool = False, origin: str = ""
) -> None:
    """Add app:<tag>'s job (of the event `origin`) and finish it (COMPLETE, or FAILED) at
    `at`."""
    await journal.add_jobs([key(tag, origin)])
    [row] = await journal.claim_due(1, datetime.now(UTC))
    if failed:
        await journal.end(
            row.id,
            Failed(FailureCode.NOT_FOUND, "gone", temporary=False, max_attempts=3, backoff=0),
            now=at,
        )
    else:
        await journal.end(
            row.id,
            Completed(CopyCounters(bytes_copied=1, blobs_copied=1)),
            now=at,
        )


class TestPrune:
    """Journal.prune and the daemon's prune_once."""

    async def test_old_history_goes_queue_and_recent_history_stay(
        self, journal: Journal, journal_url: str
    ) -> None:
        """On a one-way route, events received and jobs finished before the cutoff are
        deleted; recent ones, and unfinished jobs however old, stay, and `status` still answers
        for the recent ones."""
        await record(journal, b"old")
        age_events(journal_url, OLD)
        await record(journal, b"recent")
        await finish(journal, "old-complete", at=OLD)
        await finish(journal, "old-failed", at=OLD, failed=True)
        await finish(journal, "recent", at=RECENT)
        await journal.add_jobs([key("queued")])  # PENDING: the queue, never pruned
        pruned = await prune_once(journal, RETENTION_DAYS, NOW)
        assert pruned == Pruned(events=1, jobs=2)
        assert [event.payload for event in await journal.events()] == [b"recent"]
        left = {row.tag: row.state for row in await journal.jobs()}
        assert left == {"recent": JobState.COMPLETE, "queued": JobState.PENDING}
        [status] = await journal.status("use1", "app", tag="recent")
        assert status.state is JobState.COMPLETE

    async def test_an_active_active_route_keeps_who_wrote_each_tag_last(
        self, journal: Journal, journal_url: str
    ) -> None:
        """On a route that goes both ways, old jobs are deleted once a newer job of their tag
        replaced them; the newest job (and newest COMPLETE one) of each tag stays however old —
        who wrote each tag last, which a reconcile's hold reads."""
        await record(journal, b"old")
        age_events(journal_url, OLD)
        await record(journal, b"recent")
        await finish(journal, "moved", at=OLD, origin="e1")
        await finish(journal, "moved", at=RECENT, origin="e2")
        await finish(journal, "retried", at=OLD, failed=True, origin="e3")
        await finish(journal, "retried", at=OLD, origin="e4")
        await finish(journal, "then-failed", at=OLD, origin="e5")
        await finish(journal, "then-failed", at=OLD, failed=True, origin="e6")
        await finish(journal, "alone", at=OLD, origin="e7")
        await journal.add_jobs([key("queued")])  # PENDING: the queue, never pruned
        pruned = await prune_once(journal, RETENTION_DAYS, NOW, BOTH_WAYS)
        assert pruned == Pruned(events=1, jobs=2)
        assert [event.payload for event in await journal.events()] == [b"recent"]
        left = sorted((row.tag or "", row.origin, row.state) for row in await journal.jobs())
        assert left == [
            ("alone", "e7", JobState.COMPLETE),
            ("moved", "e2", JobState.COMPLETE),
            ("queued", "", JobState.PENDING),
            ("retried", "e4", JobState.COMPLETE),
            ("then-failed", "e5", JobState.COMPLETE),
            ("then-failed", "e6", JobState.FAILED),
        ]
        [status] = await journal.status("use1", "app", tag="moved")
        assert status.state is JobState.COMPLETE

    async def test_jobs_are_walked_in_batches_once(self, journal: Journal) -> None:
        """More old jobs of a route both ways than a batch examines: every replaced one is
        deleted, batch after batch from where the last one ended, and the newest is kept."""
        count = PRUNE_BATCH_ROWS + 3
        for number in range(count):
            await finish(journal, "latest", at=OLD, origin=f"e{number}")
        pruned = await prune_once(journal, RETENTION_DAYS, NOW, BOTH_WAYS)
        assert (pruned.jobs, pruned.jobs_examined) == (count - 1, count)
        assert [row.origin for row in await journal.jobs()] == [f"e{count - 1}"]

    async def test_batches_until_nothing_is_left(self, journal: Journal, journal_url: str) -> None:
        """More old events than a batch holds are all deleted, PRUNE_BATCH_ROWS at a time."""
        count = PRUNE_BATCH_ROWS * 2 + 7
        engine = create_engine(journal_url)
        row = {
            "received_at": OLD, "source": "use1", "topic": "t", "payload_sha256": "0" * 64,
            "payload_size": 0, "payload": b"", "outcome": "ignored", "reason": "pull",
            "jobs_created": 0,
        }  # fmt: skip
        with engine.begin() as connection:
            connection.execute(insert(EVENTS), [row] * count)
        engine.dispose()
        assert await journal.prune(NOW, PRUNE_BATCH_ROWS) == Pruned(PRUNE_BATCH_ROWS, 0)
        assert await prune_once(journal, RETENTION_DAYS, NOW) == Pruned(count - PRUNE_BATCH_ROWS, 0)
        assert await journal.events() == []

    async def test_zero_days_keeps_everything(self, journal: Journal, journal_url: str) -> None:
        """retention_days = 0 prunes nothing, however old."""
        await record(journal, b"old")
        age_events(journal_url, OLD - timedelta(days=3650))
        assert await prune_once(journal, 0, NOW) == Pruned(0, 0)
        assert len(await journal.events()) == 1


async def test_prune_forever_prunes_at_once_and_stops(journal: Journal, journal_url: str) -> None:
    """The daemon's loop prunes as soon as it starts, reading the retention it is given, and
    returns once told to stop (it would otherwise wait PRUNE_INTERVAL_SECONDS)."""
    await record(journal, b"old")
    age_events(journal_url, OLD)
    stop = asyncio.Event()
    loop = asyncio.create_task(prune_forever(journal, lambda: RETENTION_DAYS, stop))
    async with asyncio.timeout(10):
        while await journal.events():
            await asyncio.sleep(0.05)
        stop.set()
        await loop


async def test_prune_forever_skips_while_another_member_prunes(
    journal: Journal, journal_url: str
) -> None:
    """A fleet member not holding the chores (`leading` false) prunes nothing; the same loop
    prunes once it holds them."""
    await record(journal, b"old")
    age_events(journal_url, OLD)
    stop = asyncio.Event()
    loop = asyncio.create_task(
        prune_forever(journal, lambda: RETENTION_DAYS, stop, leading=lambda: False)
    )
    await asyncio.sleep(0.5)
    stop.set()
    await loop
    assert len(await journal.events()) == 1
    stop.clear()
    await asyncio.wait_for(
        asyncio.gather(
            prune_forever(journal, lambda: RETENTION_DAYS, stop, leading=lambda: True),
            _stop_when_pruned(journal, stop),
        ),
        timeout=10,
    )
    assert await journal.events() == []


async def _stop_when_pruned(journal: Journal, stop: asyncio.Event) -> None:
    while await journal.events():
        await asyncio.sleep(0.05)
    stop.set()


async def test_version_2_journal_is_migrated(journal_url: str) -> None:
    """A journal of schema version 2 (no age indexes) is migrated on open: its events and jobs
    are kept, the indexes exist, and the version reads the current one."""
    write_old_journal(
        journal_url,
        2,
        [job_values("sha256:" + "a" * 64, "kept", "usw2")],
        [event_values(b"kept")],
    )
    engine = create_engine(journal_url)
    async with await open_journal(journal_url) as second:
        assert [event.payload for event in await second.events()] == [b"kept"]
        assert [row.tag for row in await second.jobs()] == ["kept"]
    with engine.connect() as connection:
        version = connection.execute(
            text("SELECT value FROM meta WHERE key = 'schema_version'")
        ).scalar_one()
        indexes = {
            index["name"]
            for table in ("events", "jobs")
            for index in inspect(connection).get_indexes(table)
        }
    engine.dispose()
    assert version == str(SCHEMA_VERSION)
    assert {"ix_events_received", "ix_jobs_finished"} <= indexes
