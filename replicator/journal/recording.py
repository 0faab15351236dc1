"""Recording received events and their jobs: one event's rows, written inside a transaction.

An event is recorded with its jobs atomically; the events of one message are recorded together,
several to a transaction (see Journal.record_events), so a large envelope costs a few commits,
not one per event.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from replicator.journal import event_rows, job_rows, own_writes, queries
from replicator.journal.models import EventOutcome, to_db_time


def record(
    session: Session, entry: event_rows.ReceivedEvent, now: datetime
) -> tuple[list[int], EventOutcome]:
    """Write one event and its jobs in `session`; the ids of its jobs and the outcome recorded
    (IGNORED for a duplicate of an accepted event, which changes no job)."""
    sha256 = (entry.fingerprint or event_rows.Fingerprint(entry.payload)).of(entry.part)
    keys = [*entry.job_keys, *entry.denied]
    duplicate_of = event_rows.accepted_duplicate(session, entry.source, sha256)
    if duplicate_of is not None:
        found = (queries.find(session, key) for key in dict.fromkeys(keys))
        ids = [record.id for record in found if record is not None and record.id]
        outcome, reason, changed = EventOutcome.IGNORED, f"duplicate of event {duplicate_of}", 0
    else:
        job_rows.supersede(session, entry.supersede)
        ids, changed = job_rows.ensure(
            session,
            entry.job_keys,
            pushed_at=to_db_time(entry.pushed_at) if entry.pushed_at else None,
            denied=entry.denied,
            now=to_db_time(now),
            not_before={k: to_db_time(v) for k, v in entry.not_before.items()},
        )
        outcome, reason = entry.outcome, entry.reason
        own_writes.mark_echoed(session, entry.echoes, to_db_time(now))
    event_rows.add_event(
        session,
        source=entry.source,
        topic=entry.topic,
        payload=entry.payload,
        received_at=now,
        outcome=outcome,
        reason=reason,
        jobs_created=changed,
        fingerprint=sha256,
        keep_payload=entry.keep_payload,
    )
    return ids, outcome
