"""The Journal: an async store of events and jobs over any SQLAlchemy URL.

Blocking database calls run on ONE worker thread per Journal (a single-thread executor), never on
the event loop. One thread means one connection in use at a time: SQLite allows one writer, so
serialising in-process costs nothing and spares our own tasks lock waits; other processes sharing
the file are serialised by SQLite's lock (BEGIN IMMEDIATE + busy_timeout, see schema.py), and on
PostgreSQL by row locks. Every method is one transaction; every state change goes through
domain.jobs.transition (see jobs.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import Engine, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlmodel import Session

from replicator.domain.events.echoes import OwnWrite, Write
from replicator.domain.fleet.leases import Lease
from replicator.domain.jobs import JobKey, JobState
from replicator.domain.jobs.ends import JobEnding
from replicator.errors import JournalError
from replicator.journal import (
    deferred,
    gauges,
    leases,
    outages,
    own_writes,
    queries,
    recording,
    retention,
    upload_sessions,
)
from replicator.journal import events as event_rows
from replicator.journal import jobs as job_rows
from replicator.journal.models import (
    NO_TAG,
    EventOutcome,
    EventRow,
    JobRow,
    to_db_time,
)
from replicator.journal.queries import JOBS
from replicator.journal.retention import Pruned
from replicator.journal.schema import create_journal_engine, prepare, redacted
from replicator.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")
# Events of one message recorded per transaction: a 1 MiB envelope of 4,000 pushes costs 9
# commits instead of 4,000 (each an fsync), while no transaction holds SQLite's one write
# lock for more than a few hundred milliseconds (claims and other messages wait behind it).
EVENTS_PER_TRANSACTION = 500
# Rows `jobs()` and `events()` return by default: a few screens, as `replicator jobs` shows them.
DEFAULT_LIST_LIMIT = 100


def utcnow() -> datetime:
    """Now, as an aware UTC datetime."""
    return datetime.now(UTC)


class Journal:
    """The durable record of events and jobs; async, and safe to share between processes."""

    def __init__(self, engine: Engine, url: str, *, claimer: str) -> None:
        self._engine = engine
        self._url = url
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._closed = False
        # Recorded on the jobs this process claims (the caller's claimers.this_process()).
        self.claimer = claimer

    @classmethod
    async def open(cls, url: str, *, claimer: str) -> Journal:
        """Open (creating if needed) the journal at a SQLAlchemy URL; refuse a newer schema.
        `claimer` names this process on the jobs it claims (see claimers.py)."""
        journal = cls(create_journal_engine(url), url, claimer=claimer)
        try:
            await journal._call(prepare, journal._engine, url)
        except BaseException:
            await journal.close()
            raise
        log.info("journal_opened", url=redacted(url), dialect=journal.dialect)
        return journal

    @property
    def dialect(self) -> str:
        """The database kind: "sqlite", "postgresql", ..."""
        return self._engine.dialect.name

    async def close(self) -> None:
        """Release the connections and the worker thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._call(self._engine.dispose)
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, function, *args)

    def _transact(self, work: Callable[[Session], T]) -> T:
        try:
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                return work(session)
        except SQLAlchemyError as exc:
            detail = exc.orig if isinstance(exc, DBAPIError) else exc
            # The database refused these values (a constraint, a value it cannot hold): trying
            # the same write again fails the same way. Anything else (locked, full, away) may
            # pass later.
            refused = isinstance(exc, IntegrityError | DataError)
            raise JournalError(
                f"journal {redacted(self._url)}: {detail}", temporary=not refused
            ) from exc

    async def _run(self, work: Callable[[Session], T]) -> T:
        if self._closed:
            raise JournalError("the journal is closed", temporary=False)
        return await self._call(self._transact, work)

    # -- writing -------------------------------------------------------------------------------

    async def record_event(self, event: event_rows.ReceivedEvent) -> list[int]:
        """Record a received event and its jobs in ONE transaction; the ids of the keys' jobs.

        Jobs are inserted idempotently (see add_jobs). The same payload from the same source,
        already accepted, is recorded as an ignored duplicate and changes no job, so a
        redelivered message never re-queues anything. The ids name every job of `job_keys` and
        `denied`, whether created now, re-queued, or already there.
        """
        [ids] = await self.record_events([event])
        return ids

    async def record_events(self, events: Sequence[event_rows.ReceivedEvent]) -> list[list[int]]:
        """Record the events of one message, EVENTS_PER_TRANSACTION to a transaction; the ids of
        each one's jobs. Each event is recorded with its jobs atomically and idempotently (see
        record_event): after a crash between two transactions the redelivered message records
        the rest and takes the recorded ones for duplicates."""
        now = utcnow()
        found: list[list[int]] = []
        for start in range(0, len(events), EVENTS_PER_TRANSACTION):
            chunk = events[start : start + EVENTS_PER_TRANSACTION]

            def work(
                session: Session, chunk: Sequence[event_rows.ReceivedEvent] = chunk
            ) -> list[tuple[list[int], EventOutcome]]:
                return [recording.record(session, event, now) for event in chunk]

            for event, (ids, recorded) in zip(chunk, await self._run(work), strict=True):
                log.debug(
                    "event_recorded", source=event.source, topic=event.topic, outcome=recorded,
                    jobs=len(ids),
                )  # fmt: skip
                found.append(ids)
        return found

    async def defer_message(
        self, kept: deferred.Kept, record: event_rows.ReceivedEvent | None = None
    ) -> None:
        """Keep a message aside until it is due (see deferred.keep), with its `record` (an
        event row saying so) in the same transaction."""
        now = utcnow()

        def work(session: Session) -> None:
            deferred.keep(session, kept, now)
            if record is not None:
                recording.record(session, record, now)

        await self._run(work)

    async def claim_deferred(
        self, limit: int, now: datetime, lease_until: datetime
    ) -> list[deferred.DeferredMessage]:
        """Up to `limit` kept messages now due, held until `lease_until` (see deferred.claim)."""
        return await self._run(lambda session: deferred.claim(session, now, limit, lease_until))

    async def drop_deferred(self, topic: str, sha256: str) -> int:
        """Forget a kept message, handled or given up; how many rows went (0 or 1)."""
        return await self._run(lambda session: deferred.drop(session, topic, sha256))

    async def deferred_waiting(self) -> tuple[int, datetime | None]:
        """Messages kept aside, and when the next one is due (None when none is)."""
        return await self._run(deferred.waiting)

    async def add_jobs(
        self,
        keys: Sequence[JobKey],
        *,
        pushed_at: datetime | None = None,
        denied: Mapping[JobKey, str] | None = None,
    ) -> int:
        """Insert jobs without an event (backfill, copy); how many were created or re-queued.

        An existing key is left alone unless FAILED, which is re-queued (a new chance); a
        COMPLETE one stays COMPLETE. Denied keys are recorded FAILED with POLICY_DENIED.
        """
        pushed = to_db_time(pushed_at) if pushed_at else None
        now = to_db_time(utcnow())

        def work(session: Session) -> int:
            return job_rows.ensure(session, keys, pushed_at=pushed, denied=denied or {}, now=now)[1]

        return await self._run(work)

    async def claim_due(
        self, limit: int, now: datetime, *, skip_destinations: Collection[str] = ()
    ) -> list[JobRow]:
        """Up to `limit` due jobs (PENDING, or RETRY_WAIT whose time has come), now IN_PROGRESS,
        none for a destination in `skip_destinations`.

        Safe with several processes on one database: each job goes to exactly one claimer.
        """
        moment = to_db_time(now)
        skip = tuple(skip_destinations)
        claimer = self.claimer
        return await self._run(
            lambda session: job_rows.claim(session, limit, moment, claimer, skip)
        )

    async def end(
        self,
        job_id: int,
        ending: JobEnding,
        *,
        now: datetime | None = None,
        claimed_at: datetime | None = None,
    ) -> JobState:
        """Record how an attempt at an IN_PROGRESS job ended (domain.jobs.ends: COMPLETE,
        SUPERSEDED, RETRY_WAIT or FAILED, or held for its destination); the new state. Only
        while this journal's claimer holds the job by the claim made at `claimed_at` (the row's
        started_at; any of its claims when None): else ClaimLost, nothing written."""
        moment = to_db_time(now or utcnow())
        claim = self._claim(claimed_at)
        return await self._run(lambda session: job_rows.end(session, job_id, claim, ending, moment))

    def _claim(self, claimed_at: datetime | None) -> job_rows.Claim:
        return job_rows.Claim(self.claimer, to_db_time(claimed_at) if claimed_at else None)

    async def resume_interrupted(
        self,
        *,
        started_before: datetime | None = None,
        max_deaths: int | None = None,
        dead: Collection[str] = (),
        spare: Collection[str] = (),
        on_set_aside: Callable[[JobRow], Awaitable[None]] | None = None,
    ) -> int:
        """On start: jobs left IN_PROGRESS go back to PENDING, their interrupted attempt not
        counted; how many. `on_set_aside` is told of each job set aside (below), once it is
        journalled, to report it as any other FAILED job.

        With `max_deaths`, a job in flight at that many process deaths in a row ends FAILED
        (PROCESS_DIED) instead, so a job that kills the process cannot crash-loop it, while a
        crash loop from another cause never fails good work. A fleet sharing one database passes
        `started_before` (now minus the longest a copy can take) so it leaves its peers' running
        jobs alone.
        """
        now = to_db_time(utcnow())
        before = to_db_time(started_before) if started_before else None

        def work(session: Session) -> tuple[int, list[JobRow]]:
            count, set_aside = job_rows.resume(
                session, now, before, max_deaths, dead=dead, spare=spare
            )
            if not set_aside:
                return count, []
            return count, queries.rows(session, queries.ROWS_BY_IDS.params(ids=set_aside))

        count, set_aside = await self._run(work)
        if count:
            log.info("jobs_resumed", count=count, set_aside=len(set_aside))
        for row in set_aside:
            log.warning(
                "job_set_aside", job=row.id, source=row.source, destination=row.destination,
                repository=row.repository, digest=row.digest, tag=row.tag,
                code=row.failure_code, reason=row.failure_reason,
            )  # fmt: skip
            if on_set_aside is not None:
                await on_set_aside(row)
        return count

    async def in_progress_claimers(self) -> list[str | None]:
        """The claimer ids of the IN_PROGRESS jobs (None for jobs claimed before they were
        recorded), to tell a dead claimer's orphans from a live one's work."""
        return await self._run(
            lambda session: list(
                session.connection().execute(queries.IN_PROGRESS_CLAIMERS).scalars()
            )
        )

    async def record_writes(self, writes: Sequence[Write]) -> None:
        """Record writes the daemon is about to make at destinations (their echoes are known)."""
        await self._run(lambda session: own_writes.record(session, writes, utcnow()))

    async def own_writes(self, registry: str, repository: str, since: datetime) -> list[OwnWrite]:
        """The daemon's writes at `registry`/`repository` since `since`."""
        moment = to_db_time(since)
        return await self._run(
            lambda session: own_writes.recent(session, registry, repository, moment)
        )

    async def keep_upload(self, place: tuple[str, str, str], location: str, offset: int) -> None:
        """Record the upload of (destination, repository, digest) `place`: its URL and the
        bytes the registry acknowledged."""
        now = to_db_time(utcnow())
        await self._run(lambda session: upload_sessions.keep(session, place, location, offset, now))

    async def kept_upload(self, place: tuple[str, str, str]) -> tuple[str, int] | None:
        """(location, offset) of the upload kept for `place`, if any."""
        return await self._run(lambda session: upload_sessions.find(session, place))

    async def forget_upload(self, place: tuple[str, str, str]) -> None:
        """Drop the upload kept for `place` (committed, or given up)."""
        await self._run(lambda session: upload_sessions.forget(session, place))

    async def supersede(self, keys: Sequence[JobKey]) -> int:
        """Drop the jobs of `keys` that are still PENDING (another job covered them); how many."""
        if not keys:
            return 0
        return await self._run(lambda session: job_rows.supersede(session, keys))

    async def prune(self, before: datetime, limit: int) -> Pruned:
        """Delete, in one short transaction, up to `limit` events received before `before` and
        up to `limit` finished (COMPLETE, FAILED) jobs finished before it; how many of each."""
        moment = to_db_time(before)
        return await self._run(lambda session: retention.prune(session, moment, limit))

    async def take_lease(self, name: str, term: float) -> tuple[Lease, bool]:
        """Ask for the fleet's lease `name` for `term` seconds in this journal's claimer's name
        (see leases.take); the lease in force afterwards, ours or another member's, and whether
        it had been held before."""
        now, holder = time.time(), self.claimer
        return await self._run(lambda session: leases.take(session, name, holder, now, term))

    async def release_lease(self, name: str) -> bool:
        """Drop the lease `name` if we hold it; whether we did."""
        holder = self.claimer
        return await self._run(lambda session: leases.release(session, name, holder))

    async def release(self, destination: str, now: datetime) -> tuple[int, int]:
        """`destination` answers again: its waiting jobs due now, its jobs FAILED for a
        temporary cause PENDING again; how many of each (see outages.release)."""
        moment = to_db_time(now)
        return await self._run(lambda session: outages.release(session, destination, moment))

    async def set_unreachable(self, destination: str, since: datetime | None) -> None:
        """Record `destination` unreachable since `since`, or (None) answering again."""
        moment = None if since is None else to_db_time(since)
        await self._run(lambda session: outages.set_unreachable(session, destination, moment))

    async def unreachable(self) -> dict[str, datetime]:
        """The destinations recorded unreachable, with when their outage began."""
        return await self._run(outages.unreachable)

    async def retry_failed(
        self, job_id: int | None = None, *, codes: Collection[str] | None = None
    ) -> int:
        """FAILED -> PENDING for one job (or every failed job when None), only those failed
        with one of `codes` when given; how many."""
        now = to_db_time(utcnow())
        return await self._run(lambda session: job_rows.retry(session, job_id, now, codes))

    # -- reading -------------------------------------------------------------------------------

    async def job(self, job_id: int) -> JobRow | None:
        """One job by id, if it exists."""

        statement = select(JOBS).where(JOBS.c.id == job_id)
        return await self._run(lambda session: next(iter(queries.rows(session, statement)), None))

    async def jobs(
        self, state: JobState | None = None, limit: int = DEFAULT_LIST_LIMIT
    ) -> list[JobRow]:
        """The most recent jobs first, optionally only those in one state."""
        statement = select(JOBS).order_by(JOBS.c.id.desc()).limit(limit)
        if state is not None:
            statement = statement.where(JOBS.c.state == state.value)
        return await self._run(lambda session: queries.rows(session, statement))

    async def status(
        self,
        source: str | None,
        repository: str,
        *,
        digest: str | None = None,
        tag: str | None = None,
    ) -> list[JobRow]:
        """The jobs of one image, by digest or by tag (any source when `source` is None).

        A tag is resolved, as ECR does, to the digest it was last pushed with: the digest of its
        newest job. Without digest and tag, every job of the repository.
        """
        narrowed = {"source": source, "tag": None if tag is None else tag or NO_TAG}
        narrowed = {column: value for column, value in narrowed.items() if value is not None}

        def work(session: Session) -> list[JobRow]:
            where = dict(narrowed)
            if tag is not None:
                statement = queries.image_statement(narrowed=tuple(where), newest=True)
                newest = queries.rows(session, statement, {"repository": repository, **where})
                if not newest:
                    return []
                where["digest"] = newest[0].digest
            if digest is not None and where.setdefault("digest", digest) != digest:
                return []  # the tag was last pushed with another digest
            statement = queries.image_statement(narrowed=tuple(where))
            return queries.rows(session, statement, {"repository": repository, **where})

        return await self._run(work)

    async def tag_jobs(
        self,
        source: str | None,
        repository: str,
        tags: Sequence[str],
        digests: Sequence[str] = (),
    ) -> list[JobRow]:
        """The jobs of `repository` (of `source`, or of any source when None) for any of `tags`,
        and its untagged jobs (a delete or a copy by digest) of any of `digests`: what a scan's
        page of tags needs, so a repository of a million tags is never read whole."""
        if not tags and not digests:
            return []
        params: dict[str, Any] = {
            "repository": repository, "tags": list(tags), "digests": list(digests),
        }  # fmt: skip
        if source is not None:
            params["source"] = source
        statement = queries.tags_statement(by_source=source is not None)
        return await self._run(lambda session: queries.rows(session, statement, params))

    async def counts(self) -> dict[tuple[JobState, str], int]:
        """Jobs per (state, destination), for metrics."""
        return await self._run(gauges.counts)

    async def oldest_unreplicated(self) -> dict[str, datetime]:
        """Per destination, the push time of the oldest job not yet finished (the RPO)."""
        return await self._run(gauges.oldest_unreplicated)

    async def probe(self) -> None:
        """Open a write transaction and end it: the journal answers and could write (on SQLite
        this takes the write lock, BEGIN IMMEDIATE); for the daemon's watchdog."""
        await self._run(lambda session: session.execute(select(1)))

    async def backlog(self) -> int:
        """Jobs waiting for a worker: PENDING plus RETRY_WAIT (due or not)."""
        return await self._run(gauges.backlog)

    async def next_due_at(self) -> datetime | None:
        """When the next job becomes claimable (in the past if one already is); None if none."""
        return await self._run(gauges.next_due_at)

    async def events(
        self, outcome: EventOutcome | None = None, limit: int = DEFAULT_LIST_LIMIT
    ) -> list[EventRow]:
        """The most recent recorded events first (rejected ones are the dead letter)."""
        return await self._run(lambda session: event_rows.list_events(session, outcome, limit))
