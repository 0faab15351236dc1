"""Journals as older replicator releases wrote them, to test migrations on SQLite and PostgreSQL.

The tables are frozen copies of what schema version 6 created (SQLAlchemy Core, the same column
types SQLModel used), not today's models: a migration must take the journal a release really
left behind. Version 5 is version 6 without the fleet indexes (`ix_jobs_tag`,
`ix_jobs_state_destination`); version 4 is version 5 without `jobs.deaths` and
`jobs.last_death`; version 3 is version 4 without `jobs.origin` (and its place in the unique key);
version 2 is version 3 without the retention indexes (`ix_events_received`,
`ix_jobs_finished`); version 1 is version 2 without `jobs.claimed_by`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    UniqueConstraint,
    create_engine,
    insert,
)
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

WRITTEN_AT = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def _tables(version: int) -> MetaData:
    metadata = MetaData()
    claimed_by = [Column("claimed_by", AutoString(512))] if version >= 2 else []
    finished = [Index("ix_jobs_finished", "finished_at")] if version >= 3 else []
    received = [Index("ix_events_received", "received_at")] if version >= 3 else []
    origin = [Column("origin", AutoString(128), nullable=False)] if version >= 4 else []
    key = ("kind", "source", "repository", "digest", "tag", "destination")
    key += ("origin",) if version >= 4 else ()
    deaths = (
        [Column("deaths", Integer, nullable=False), Column("last_death", Integer)]
        if version >= 5
        else []
    )
    fleet = (
        [Index("ix_jobs_tag", "repository", "tag"),
         Index("ix_jobs_state_destination", "state", "destination")]
        if version >= 6
        else []
    )  # fmt: skip
    Table(
        "jobs",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("kind", AutoString(16), nullable=False),
        Column("source", AutoString(255), nullable=False),
        Column("repository", AutoString(255), nullable=False),
        Column("digest", AutoString(200), nullable=False),
        Column("tag", AutoString(128), nullable=False),
        Column("destination", AutoString(255), nullable=False),
        Column("state", AutoString(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("next_attempt_at", UTCDateTime),
        Column("failure_code", AutoString(32)),
        Column("failure_reason", AutoString),
        Column("bytes_copied", Integer, nullable=False),
        Column("blobs_copied", Integer, nullable=False),
        Column("blobs_mounted", Integer, nullable=False),
        Column("blobs_skipped", Integer, nullable=False),
        Column("pushed_at", UTCDateTime),
        Column("created_at", UTCDateTime, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        Column("started_at", UTCDateTime),
        Column("finished_at", UTCDateTime),
        *claimed_by,
        *origin,
        *deaths,
        UniqueConstraint(*key, name="uq_jobs_key"),
        Index("ix_jobs_due", "state", "next_attempt_at"),
        Index("ix_jobs_image", "repository", "digest"),
        *finished,
        *fleet,
    )
    Table(
        "events",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("received_at", UTCDateTime, nullable=False),
        Column("source", AutoString),
        Column("topic", AutoString, nullable=False),
        Column("payload_sha256", AutoString(64), nullable=False),
        Column("payload_size", Integer, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("outcome", AutoString(16), nullable=False),
        Column("reason", AutoString, nullable=False),
        Column("jobs_created", Integer, nullable=False),
        Index("ix_events_dedup", "source", "payload_sha256"),
        *received,
    )
    Table(
        "meta",
        metadata,
        Column("key", AutoString(64), primary_key=True),
        Column("value", AutoString, nullable=False),
    )
    return metadata


def job_values(
    digest: str, tag: str, destination: str, *, state: str = "COMPLETE", **more: Any
) -> dict[str, Any]:
    """A jobs row as an old release wrote it (a copy from use1/app)."""
    return {
        "kind": "COPY",
        "source": "use1",
        "repository": "app",
        "digest": digest,
        "tag": tag,
        "destination": destination,
        "state": state,
        "attempts": 1,
        "next_attempt_at": None,
        "failure_code": None,
        "failure_reason": None,
        "bytes_copied": 10,
        "blobs_copied": 1,
        "blobs_mounted": 0,
        "blobs_skipped": 0,
        "pushed_at": WRITTEN_AT,
        "created_at": WRITTEN_AT,
        "updated_at": WRITTEN_AT,
        "started_at": WRITTEN_AT,
        "finished_at": WRITTEN_AT,
        **more,
    }


def event_values(payload: bytes) -> dict[str, Any]:
    """An events row as an old release wrote it (an ignored event from use1)."""
    return {
        "received_at": WRITTEN_AT,
        "source": "use1",
        "topic": "registry/use1/events",
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_size": len(payload),
        "payload": payload,
        "outcome": "ignored",
        "reason": "pull",
        "jobs_created": 0,
    }


def write_old_journal(
    url: str,
    version: int,
    jobs: Sequence[dict[str, Any]],
    events: Sequence[dict[str, Any]] = (),
) -> None:
    """Create at `url` the tables of schema `version` (1 to 6) holding `jobs` and `events`."""
    if version not in range(1, 7):
        raise ValueError(f"no frozen tables for schema version {version}")
    if version >= 4:
        jobs = [{"origin": "", **job} for job in jobs]  # of no event, as a scan's
    if version >= 5:
        jobs = [{"deaths": 0, "last_death": None, **job} for job in jobs]
    metadata = _tables(version)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            metadata.create_all(connection)
            if jobs:
                connection.execute(insert(metadata.tables["jobs"]), list(jobs))
            if events:
                connection.execute(insert(metadata.tables["events"]), list(events))
            connection.execute(
                insert(metadata.tables["meta"]), {"key": "schema_version", "value": str(version)}
            )
    finally:
        engine.dispose()
