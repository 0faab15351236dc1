"""The Journal's intake: received events recorded with their jobs (recording.py), messages
kept aside until due (deferred.py), and the events read back (the dead letter among them)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Session

from replicator.journal import deferred, event_rows, recording
from replicator.journal.models import EventOutcome, EventRow
from replicator.journal.transactions import DEFAULT_LIST_LIMIT, Transactions, utcnow
from replicator.logs import get_logger

log = get_logger(__name__)
# Events of one message recorded per transaction: a 1 MiB envelope of 4,000 pushes costs 9
# commits instead of 4,000 (each an fsync), while no transaction holds SQLite's one write
# lock for more than a few hundred milliseconds (claims and other messages wait behind it).
EVENTS_PER_TRANSACTION = 500


class IntakeStore(Transactions):
    """The events of the journal."""

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

    async def events(
        self, outcome: EventOutcome | None = None, limit: int = DEFAULT_LIST_LIMIT
    ) -> list[EventRow]:
        """The most recent recorded events first (rejected ones are the dead letter)."""
        return await self._run(lambda session: event_rows.list_events(session, outcome, limit))
