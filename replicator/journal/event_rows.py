"""Rows of the `events` table: every received bus event, its outcome, and duplicate detection."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Table, bindparam, insert
from sqlmodel import Session, col, select

from replicator.domain.jobs import JobKey
from replicator.journal.models import (
    MAX_REASON_CHARS,
    MAX_STORED_PAYLOAD_BYTES,
    EventOutcome,
    EventRecord,
    EventRow,
    to_db_time,
)


class Fingerprint:
    """The fingerprints of the events of one message, the payload hashed once.

    An event's fingerprint is the hex SHA-256 of its payload (also of one stored truncated),
    with `#<part>` appended for the second and later events of a batch envelope, so each event
    of a batch is its own, and a redelivered batch is a duplicate as a whole. The hash of the
    payload is copied for each part, never recomputed: a 1 MiB envelope of thousands of events
    is hashed once.
    """

    def __init__(self, payload: bytes) -> None:
        self._payload = hashlib.sha256(payload)

    def of(self, part: int = 0) -> str:
        """The fingerprint of event `part` of the message."""
        if not part:
            return self._payload.hexdigest()
        suffixed = self._payload.copy()
        suffixed.update(f"#{part}".encode())
        return suffixed.hexdigest()


def payload_sha256(payload: bytes, part: int = 0) -> str:
    """The fingerprint of event `part` of `payload` (see Fingerprint)."""
    return Fingerprint(payload).of(part)


# Built once, with the values bound as parameters (see queries.py): recording an event is on
# the daemon's path from a push to its copies.
_EVENTS: Table = EventRecord.metadata.tables["events"]
_INSERT = insert(_EVENTS)


def _accepted_statement(source_is_null: bool) -> Select[Any]:
    source = _EVENTS.c.source
    return (
        select(_EVENTS.c.id)
        .where(
            source.is_(None) if source_is_null else source == bindparam("source"),
            _EVENTS.c.payload_sha256 == bindparam("sha256"),
            _EVENTS.c.outcome.in_((EventOutcome.ACCEPTED.value, EventOutcome.ECHO.value)),
        )
        .order_by(_EVENTS.c.id)
        .limit(1)
    )


_ACCEPTED = {True: _accepted_statement(True), False: _accepted_statement(False)}


def accepted_duplicate(session: Session, source: str | None, fingerprint: str) -> int | None:
    """The id of an earlier ACCEPTED (or ECHO) event with the same source and fingerprint, if
    any: a redelivered echo is no new push even once its write was matched.

    Only those count: a payload rejected before (say, for a registry the config did
    not yet name) is judged afresh.
    """
    params = {"source": source, "sha256": fingerprint}
    found = session.connection().execute(_ACCEPTED[source is None], params).scalar()
    return None if found is None else int(found)


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """A received event as Journal.record_event records it, with the jobs it asks for.

    `job_keys` are its jobs, `denied` its jobs refused by a policy (recorded FAILED), those in
    `not_before` wait until then, and PENDING jobs of `supersede` are dropped (an index's job
    covers its children). `part` numbers the events of one batch envelope (0 for the first) so
    that each is recorded on its own and none is taken for a duplicate of its sibling. Several
    events of one message share the message's `fingerprint` (hashed once) and only one keeps
    the payload (`keep_payload`): the others store none.
    """

    source: str | None
    topic: str
    payload: bytes
    outcome: EventOutcome
    reason: str
    job_keys: Sequence[JobKey] = ()
    pushed_at: datetime | None = None
    denied: Mapping[JobKey, str] = field(default_factory=dict)
    not_before: Mapping[JobKey, datetime] = field(default_factory=dict)
    supersede: Sequence[JobKey] = ()
    part: int = 0
    fingerprint: Fingerprint | None = None
    keep_payload: bool = True
    # The daemon's own writes (own_writes ids) this event is the echo of: marked echoed with it.
    echoes: Sequence[int] = ()


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
    fingerprint: str,
    keep_payload: bool = True,
) -> int:
    """Insert one event row, the payload truncated to MAX_STORED_PAYLOAD_BYTES (or empty
    when another row of the same message keeps it); its id."""
    values = {
        "received_at": to_db_time(received_at),
        "source": source,
        "topic": topic,
        "payload_sha256": fingerprint,
        "payload_size": len(payload),
        "payload": payload[:MAX_STORED_PAYLOAD_BYTES] if keep_payload else b"",
        "outcome": outcome.value,
        "reason": reason[:MAX_REASON_CHARS],
        "jobs_created": jobs_created,
    }
    inserted = session.connection().execute(_INSERT, values).inserted_primary_key
    assert inserted is not None
    return int(inserted[0])


def list_events(session: Session, outcome: EventOutcome | None, limit: int) -> list[EventRow]:
    """The most recent events first, optionally only those with one outcome."""
    statement = select(EventRecord).order_by(col(EventRecord.id).desc()).limit(limit)
    if outcome is not None:
        statement = statement.where(col(EventRecord.outcome) == outcome.value)
    return [EventRow.from_record(record) for record in session.exec(statement).all()]
