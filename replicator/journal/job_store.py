"""The Journal's jobs: add, claim, end an attempt (domain.jobs.ends), resume after a death,
retry, supersede, and read them. Every state change goes through domain.jobs.transition (see
job_rows.py and job_claims.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from replicator.domain.jobs import JobKey, JobState
from replicator.domain.jobs.ends import JobEnding
from replicator.journal import gauges, job_claims, job_rows, queries
from replicator.journal.models import NO_TAG, JobRow, to_db_time
from replicator.journal.queries import JOBS
from replicator.journal.transactions import DEFAULT_LIST_LIMIT, Transactions, utcnow
from replicator.logs import get_logger

log = get_logger(__name__)


class JobStore(Transactions):
    """The jobs of the journal."""

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
            lambda session: job_claims.claim(session, limit, moment, claimer, skip)
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
        return await self._run(
            lambda session: job_claims.end(session, job_id, claim, ending, moment)
        )

    def _claim(self, claimed_at: datetime | None) -> job_claims.Claim:
        return job_claims.Claim(self.claimer, to_db_time(claimed_at) if claimed_at else None)

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
            count, set_aside = job_claims.resume(
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

    async def supersede(self, keys: Sequence[JobKey]) -> int:
        """Drop the jobs of `keys` that are still PENDING (another job covered them); how many."""
        if not keys:
            return 0
        return await self._run(lambda session: job_rows.supersede(session, keys))

    async def retry_failed(
        self, job_id: int | None = None, *, codes: Collection[str] | None = None
    ) -> int:
        """FAILED -> PENDING for one job (or every failed job when None), only those failed
        with one of `codes` when given; how many."""
        now = to_db_time(utcnow())
        return await self._run(lambda session: job_rows.retry(session, job_id, now, codes))

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

    async def moved_copies(
        self, source: str, destination: str, repository: str, *, after: int, limit: int
    ) -> list[JobRow]:
        """The COMPLETE copies of `repository` from `source` to `destination` whose tag the
        daemon later set to another digest there, past job id `after`, at most `limit`, by id
        (queries.moved_copies_statement)."""
        params = {
            "repository": repository, "source": source, "destination": destination,
            "after": after, "limit": limit,
        }  # fmt: skip
        return await self._run(lambda session: queries.rows(session, queries.MOVED_COPIES, params))

    async def backlog(self) -> int:
        """Jobs waiting for a worker: PENDING plus RETRY_WAIT (due or not)."""
        return await self._run(gauges.backlog)

    async def next_due_at(self) -> datetime | None:
        """When the next job becomes claimable (in the past if one already is); None if none."""
        return await self._run(gauges.next_due_at)
