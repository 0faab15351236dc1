"""Rows of `deferred_messages`: bus messages kept aside until the source can answer for a tag
they name (see domain.events.tag_resolution), claimed when due and dropped once handled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, func, insert, select, update
from sqlmodel import Session

from replicator.journal.models import (
    MAX_REASON_CHARS,
    DeferredRecord,
    from_db_time,
    to_db_time,
)

DEFERRED: Table = DeferredRecord.metadata.tables["deferred_messages"]


@dataclass(frozen=True, slots=True)
class DeferredMessage:
    """A message kept aside: where it came from, what it holds, its failed reads so far."""

    id: int
    topic: str
    source: str | None
    payload: bytes
    attempts: int
    next_attempt_at: datetime
    last_error: str


@dataclass(frozen=True, slots=True)
class Kept:
    """A message to keep aside until `due`, after `attempts` failed reads (the last `error`)."""

    topic: str
    source: str | None
    payload: bytes
    sha256: str
    attempts: int
    due: datetime
    error: str


def keep(session: Session, kept: Kept, now: datetime) -> None:
    """Keep the message aside; the same message kept already (a redelivery, or its own retry)
    is updated, its count never lowered."""
    where = (DEFERRED.c.topic == kept.topic) & (DEFERRED.c.payload_sha256 == kept.sha256)
    connection = session.connection()
    found = connection.execute(select(DEFERRED.c.attempts).where(where).with_for_update()).first()
    values: dict[str, Any] = {
        "next_attempt_at": to_db_time(kept.due),
        "last_error": kept.error[:MAX_REASON_CHARS],
    }
    if found is not None:
        values["attempts"] = max(kept.attempts, int(found.attempts))
        connection.execute(update(DEFERRED).where(where).values(values))
        return
    connection.execute(
        insert(DEFERRED).values(
            received_at=to_db_time(now),
            source=kept.source,
            topic=kept.topic,
            payload_sha256=kept.sha256,
            payload=kept.payload,
            attempts=kept.attempts,
            **values,
        )
    )


def claim(
    session: Session, now: datetime, limit: int, lease_until: datetime
) -> list[DeferredMessage]:
    """Up to `limit` messages due at `now`, each made due again only at `lease_until`, so that
    no other process takes one while it is handled (and one left by a crash comes back)."""
    connection = session.connection()
    due = connection.execute(
        select(DEFERRED)
        .where(DEFERRED.c.next_attempt_at <= to_db_time(now))
        .order_by(DEFERRED.c.next_attempt_at, DEFERRED.c.id)
        .limit(limit)
    ).all()
    claimed: list[DeferredMessage] = []
    for row in due:
        moved = connection.execute(
            update(DEFERRED)
            .where(DEFERRED.c.id == row.id, DEFERRED.c.next_attempt_at == row.next_attempt_at)
            .values(next_attempt_at=to_db_time(lease_until))
        )
        if moved.rowcount == 1:
            claimed.append(
                DeferredMessage(
                    id=row.id,
                    topic=row.topic,
                    source=row.source,
                    payload=bytes(row.payload),
                    attempts=row.attempts,
                    next_attempt_at=from_db_time(row.next_attempt_at) or now,
                    last_error=row.last_error,
                )
            )
    return claimed


def drop(session: Session, topic: str, sha256: str) -> int:
    """Forget the message (handled, or given up); how many rows went (0 or 1)."""
    gone = session.connection().execute(
        delete(DEFERRED).where(DEFERRED.c.topic == topic, DEFERRED.c.payload_sha256 == sha256)
    )
    return int(gone.rowcount)


def waiting(session: Session) -> tuple[int, datetime | None]:
    """How many messages are kept aside, and when the next one is due."""
    found = (
        session.connection()
        .execute(select(func.count(), func.min(DEFERRED.c.next_attempt_at)))
        .one()
    )
    return int(found[0]), from_db_time(found[1])
