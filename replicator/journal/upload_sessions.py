"""Blob uploads under way at destinations (upload_sessions): kept as the registry acknowledges
their PATCHes, read when the blob is uploaded again (after a restart), forgotten when it is
committed or given up, and pruned once older than any registry keeps an upload.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Table, and_, bindparam, delete, insert, select, update
from sqlmodel import Session

from replicator.journal.models import UploadSessionRecord

_SESSIONS: Table = UploadSessionRecord.metadata.tables["upload_sessions"]
_SAME = and_(
    _SESSIONS.c.destination == bindparam("destination"),
    _SESSIONS.c.repository == bindparam("repository"),
    _SESSIONS.c.digest == bindparam("digest"),
)
_FIND = select(_SESSIONS.c.location, _SESSIONS.c.offset).where(_SAME)
# An UPDATE may not name its bind parameters after columns it sets: the key is spelled apart.
_UPDATE = (
    update(_SESSIONS)
    .where(
        _SESSIONS.c.destination == bindparam("at_destination"),
        _SESSIONS.c.repository == bindparam("at_repository"),
        _SESSIONS.c.digest == bindparam("at_digest"),
    )
    .values(
        location=bindparam("new_location"),
        offset=bindparam("new_offset"),
        updated_at=bindparam("at"),
    )
)
_INSERT = insert(_SESSIONS)
_FORGET = delete(_SESSIONS).where(_SAME)
_OLD = (
    select(_SESSIONS.c.id)
    .where(_SESSIONS.c.updated_at < bindparam("before"))
    .order_by(_SESSIONS.c.id)
    .limit(bindparam("limit"))
)
_PRUNE = delete(_SESSIONS).where(_SESSIONS.c.id.in_(_OLD.scalar_subquery()))


def keep(
    session: Session,
    place: tuple[str, str, str],
    location: str,
    offset: int,
    now: datetime,
) -> None:
    """Record that the upload of (destination, repository, digest) `place` is at `location`
    with `offset` bytes acknowledged."""
    destination, repository, digest = place
    key = {"destination": destination, "repository": repository, "digest": digest}
    connection = session.connection()
    changed = connection.execute(
        _UPDATE,
        {
            "at_destination": destination,
            "at_repository": repository,
            "at_digest": digest,
            "new_location": location,
            "new_offset": offset,
            "at": now,
        },
    ).rowcount
    if not changed:
        connection.execute(
            _INSERT, {**key, "location": location, "offset": offset, "updated_at": now}
        )


def find(session: Session, place: tuple[str, str, str]) -> tuple[str, int] | None:
    """(location, offset) of the upload kept for `place`, if any."""
    destination, repository, digest = place
    row = (
        session.connection()
        .execute(_FIND, {"destination": destination, "repository": repository, "digest": digest})
        .first()
    )
    return None if row is None else (str(row.location), int(row.offset))


def forget(session: Session, place: tuple[str, str, str]) -> None:
    """Drop the upload kept for `place` (committed, or given up)."""
    destination, repository, digest = place
    session.connection().execute(
        _FORGET, {"destination": destination, "repository": repository, "digest": digest}
    )


def prune(session: Session, before: datetime, limit: int) -> int:
    """Delete up to `limit` uploads last kept before `before`; how many."""
    return int(session.connection().execute(_PRUNE, {"before": before, "limit": limit}).rowcount)
