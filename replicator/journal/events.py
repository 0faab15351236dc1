"""Rows of the `events` table: every received bus event, its outcome, and duplicate detection."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlmodel import Session, col, select

from replicator.journal.models import (
    MAX_REASON_CHARS,
    MAX_STORED_PAYLOAD_BYTES,
    EventOutcome,
    EventRecord,
    EventRow,
    to_db_time,
)


def payload_sha256(payload: bytes, part: int = 0) -> str:
    """The fingerprint of one event: the hex SHA-256 of its payload (also of one stored
    truncated), with `#<part>` appended for the second and later events of a batch envelope,
    so each event of a batch is its own, and a redelivered batch is a duplicate as a whole."""
    suffix = f"#{part}".encode() if part else b""
    return hashlib.sha256(payload + suffix).hexdigest()


def accepted_duplicate(
    session: Session, source: str | None, payload: bytes, part: int = 0
) -> int | None:
    """The id of an earlier ACCEPTED event with the same source and fingerprint, if any.

    Only accepted events count: a payload rejected before (say, for a registry the config did
    not yet name) is judged afresh.
    """
    source_filter = (
        col(EventRecord.source).is_(None) if source is None else col(EventRecord.source) == source
    )
    statement = (
        select(EventRecord.id)
        .where(
            source_filter,
            col(EventRecord.payload_sha256) == payload_sha256(payload, part),
            col(EventRecord.outcome) == EventOutcome.ACCEPTED.value,
        )
        .order_by(col(EventRecord.id))
        .limit(1)
    )
    return session.exec(statement).first()


def add_event(
    session: Session,
    *,
    source: str | None,
    topic: str,
    payload: bytes,
    received_at: datetime,
    outcome: EventOutcome,
    reason: str,
    jobs_created: int,
    part: int = 0,
) -> int:
    """Insert one event row, the payload truncated to MAX_STORED_PAYLOAD_BYTES; its id."""
    record = EventRecord(
        received_at=to_db_time(received_at),
        source=source,
        topic=topic,
        payload_sha256=payload_sha256(payload, part),
        payload_size=len(payload),
        payload=payload[:MAX_STORED_PAYLOAD_BYTES],
        outcome=outcome.value,
        reason=reason[:MAX_REASON_CHARS],
        jobs_created=jobs_created,
    )
    session.add(record)
    session.flush()
    assert record.id is not None
    return record.id


def list_events(session: Session, outcome: EventOutcome | None, limit: int) -> list[EventRow]:
    """The most recent events first, optionally only those with one outcome."""
    statement = select(EventRecord).order_by(col(EventRecord.id).desc()).limit(limit)
    if outcome is not None:
        statement = statement.where(col(EventRecord.outcome) == outcome.value)
    return [EventRow.from_record(record) for record in session.exec(statement).all()]
