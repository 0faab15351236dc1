"""The Journal's shared state of a daemon and its fleet beside the jobs: the fleet's leases,
the MQTT sessions made, destinations' outages, the daemon's own writes (their echoes), blob
uploads under way, the gauges, retention, and the watchdog's probe."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from datetime import datetime

from sqlalchemy import select

from replicator.domain.events.echoes import OwnWrite, Write
from replicator.domain.fleet.leases import Lease
from replicator.domain.jobs import JobState
from replicator.journal import (
    gauges,
    leases,
    mqtt_sessions,
    outages,
    own_writes,
    retention,
    upload_sessions,
)
from replicator.journal.models import to_db_time
from replicator.journal.retention import Pruned
from replicator.journal.transactions import Transactions, utcnow


class FleetStore(Transactions):
    """Leases, outages, own writes, uploads, gauges and retention of the journal."""

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

    async def prune(
        self,
        before: datetime,
        limit: int,
        *,
        after_job: int = 0,
        returning: Collection[tuple[str, str]] = (),
    ) -> Pruned:
        """Delete, in one short transaction, up to `limit` events received before `before` and,
        of the next `limit` jobs finished before it (past id `after_job`), those of a one-way
        route and those a newer job of the same tag and route replaced (routes in `returning`
        go both ways; see retention.py); how many of each."""
        moment = to_db_time(before)
        return await self._run(
            lambda session: retention.prune(session, moment, limit, after_job, returning)
        )

    async def take_lease(
        self, name: str, term: float, gone: Callable[[str], bool] | None = None
    ) -> tuple[Lease, bool]:
        """Ask for the fleet's lease `name` for `term` seconds in this journal's claimer's name
        (see leases.take; `gone(holder)`: whether a holder is known dead, then its lease is
        taken at once); the lease in force afterwards, ours or another member's, and whether
        it had been held before."""
        now, holder = time.time(), self.claimer
        return await self._run(
            lambda session: leases.take(session, name, holder, now, term, gone=gone)
        )

    async def lease(self, name: str) -> Lease | None:
        """The fleet's lease `name` as stored: its holder and expiry (None: never held)."""
        return await self._run(lambda session: leases.current(session, name))

    async def release_lease(self, name: str) -> bool:
        """Drop the lease `name` if we hold it; whether we did."""
        holder = self.claimer
        return await self._run(lambda session: leases.release(session, name, holder))

    async def mqtt_session_made(self, client_id: str, broker: str) -> bool:
        """Whether `client_id` made its persistent session at `broker` before (see
        mqtt_sessions.py): then the broker should still hold it."""
        return await self._run(lambda session: mqtt_sessions.made(session, client_id, broker))

    async def remember_mqtt_session(self, client_id: str, broker: str) -> None:
        """Record that `client_id` made its persistent session at `broker`."""
        now = time.time()
        await self._run(lambda session: mqtt_sessions.remember(session, client_id, broker, now))

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
