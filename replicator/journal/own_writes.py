"""The daemon's own writes at destinations (own_writes): recorded just before each manifest PUT
and delete, read when an event comes from that registry (is it their echo?), marked when an
event is matched to one, and pruned once past the echo window.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlmodel import Session

from replicator.domain.events.echoes import OwnWrite, Write, WriteAction
from replicator.journal.models import NO_TAG, OwnWriteRecord, from_db_time, to_db_time

_WRITES: Table = OwnWriteRecord.metadata.tables["own_writes"]

_INSERT = insert(_WRITES)
_RECENT = select(_WRITES).where(
    _WRITES.c.destination == bindparam("destination"),
    _WRITES.c.repository == bindparam("repository"),
    _WRITES.c.written_at >= bindparam("since"),
)
_ECHOED = (
    update(_WRITES)
    .where(_WRITES.c.id == bindparam("write_id"), _WRITES.c.echoed_at.is_(None))
    .values(echoed_at=bindparam("at"))
)
_OLD = (
    select(_WRITES.c.id)
    .where(_WRITES.c.written_at < bindparam("before"))
    .order_by(_WRITES.c.id)
    .limit(bindparam("limit"))
)
_PRUNE = delete(_WRITES).where(_WRITES.c.id.in_(_OLD.scalar_subquery()))


def record(session: Session, writes: Sequence[Write], now: datetime) -> None:
    """Insert `writes`, made at `now`."""
    if not writes:
        return
    at = to_db_time(now)
    session.connection().execute(
        _INSERT,
        [
            {
                "destination": w.registry,
                "repository": w.repository,
                "action": w.action.value,
                "digest": w.digest,
                "tag": w.tag or NO_TAG,
                "written_at": at,
                "echoed_at": None,
            }
            for w in writes
        ],
    )


def recent(session: Session, registry: str, repository: str, since: datetime) -> list[OwnWrite]:
    """The writes at `registry`/`repository` made since `since` (echoed ones say so)."""
    params = {"destination": registry, "repository": repository, "since": to_db_time(since)}
    found = []
    for row in session.connection().execute(_RECENT, params):
        written = from_db_time(row.written_at)
        assert written is not None
        found.append(
            OwnWrite(
                id=row.id,
                action=WriteAction(row.action),
                digest=row.digest,
                tag=row.tag or None,
                at=written.timestamp(),
                echoed=row.echoed_at is not None,
            )
        )
    return found


def mark_echoed(session: Session, write_ids: Sequence[int], now: datetime) -> None:
    """Mark writes as echoed by an event received at `now`: none is matched again."""
    if write_ids:
        at = to_db_time(now)
        session.connection().execute(_ECHOED, [{"write_id": i, "at": at} for i in write_ids])


def prune(session: Session, before: datetime, limit: int) -> int:
    """Delete up to `limit` writes made before `before`; how many went."""
    return session.connection().execute(_PRUNE, {"before": before, "limit": limit}).rowcount
