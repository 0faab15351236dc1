"""The steps taking a journal from each older schema version to the next one (see schema.py).

Each step runs in one transaction with its version bump, on SQLite and PostgreSQL alike. The
steps are history: they name columns, lengths and constraints as that version had them, never
today's models, so a journal of any older release migrates the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    UniqueConstraint,
    text,
)
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

from replicator.errors import SchemaError

Migration = Callable[[Connection], None]

# The unique key of the jobs table as versions 1 to 3 declared it, and as version 4 does.
_JOBS_KEY = "uq_jobs_key"
_IMAGE_COLUMNS = "kind, source, repository, digest, tag, destination"
_UNIQUE_CLAUSE = re.compile(rf"CONSTRAINT {_JOBS_KEY} UNIQUE \([^)]*\)")
# The CREATE INDEX statements of the jobs table (not the unique key's own, which has none).
_SQLITE_JOBS_INDEXES = text(
    "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs' AND sql IS NOT NULL"
)


def _add_claimed_by(connection: Connection) -> None:
    """1 -> 2: jobs.claimed_by, the process holding an IN_PROGRESS job."""
    connection.execute(text("ALTER TABLE jobs ADD COLUMN claimed_by VARCHAR(512)"))


def _retention_indexes(connection: Connection) -> None:
    """2 -> 3: indexes on events.received_at and jobs.finished_at, for pruning by age."""
    connection.execute(
        text("CREATE INDEX IF NOT EXISTS ix_events_received ON events (received_at)")
    )
    connection.execute(text("CREATE INDEX IF NOT EXISTS ix_jobs_finished ON jobs (finished_at)"))


def _jobs_by_event(connection: Connection) -> None:
    """3 -> 4: jobs.origin, the event a job is of, joins the jobs' unique key; the jobs kept are
    of no event (origin ''), as a scan's are."""
    connection.execute(text("ALTER TABLE jobs ADD COLUMN origin VARCHAR(128) NOT NULL DEFAULT ''"))
    unique = f"{_IMAGE_COLUMNS}, origin"
    if connection.dialect.name == "sqlite":
        _rebuild_sqlite_jobs(connection, unique)
        return
    connection.execute(text(f"ALTER TABLE jobs DROP CONSTRAINT {_JOBS_KEY}"))
    connection.execute(text(f"ALTER TABLE jobs ADD CONSTRAINT {_JOBS_KEY} UNIQUE ({unique})"))


def _rebuild_sqlite_jobs(connection: Connection, unique: str) -> None:
    """Give SQLite's jobs table the unique key on `unique`: SQLite cannot drop a table
    constraint, so the table is copied into one declared with the new key (its own stored
    CREATE statement, the key's columns replaced), then its indexes are made again."""
    ddl = connection.execute(
        text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'jobs'")
    ).scalar_one()
    indexes = connection.execute(_SQLITE_JOBS_INDEXES).scalars().all()
    declared, found = _UNIQUE_CLAUSE.subn(f"CONSTRAINT {_JOBS_KEY} UNIQUE ({unique})", ddl)
    if found != 1 or not declared.startswith("CREATE TABLE jobs "):
        raise SchemaError(
            f"the jobs table of this journal is not as replicator created it ({ddl[:200]!r}): "
            "it cannot be migrated"
        )
    connection.execute(text(declared.replace("CREATE TABLE jobs ", "CREATE TABLE jobs_new ", 1)))
    connection.execute(text("INSERT INTO jobs_new SELECT * FROM jobs"))
    connection.execute(text("DROP TABLE jobs"))
    connection.execute(text("ALTER TABLE jobs_new RENAME TO jobs"))
    for index in indexes:
        connection.execute(text(index))


def _count_deaths(connection: Connection) -> None:
    """4 -> 5: jobs.deaths and jobs.last_death, the process deaths a job was in flight at in a
    row (the meta row numbering deaths is created on open, as for a new journal)."""
    connection.execute(text("ALTER TABLE jobs ADD COLUMN deaths INTEGER NOT NULL DEFAULT 0"))
    connection.execute(text("ALTER TABLE jobs ADD COLUMN last_death INTEGER"))


def _fleet_indexes(connection: Connection) -> None:
    """5 -> 6: jobs by repository and tag (`status` of a tag read every job of the repository)
    and by state and destination (the metrics' counts, every second under load, read the
    whole table instead of an index)."""
    connection.execute(text("CREATE INDEX IF NOT EXISTS ix_jobs_tag ON jobs (repository, tag)"))
    connection.execute(
        text("CREATE INDEX IF NOT EXISTS ix_jobs_state_destination ON jobs (state, destination)")
    )


def _deferred_messages(connection: Connection) -> None:
    """6 -> 7: deferred_messages, the bus messages whose tag-only push waits for its source to
    answer (the table as version 7 declares it)."""
    metadata = MetaData()
    Table(
        "deferred_messages",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("received_at", UTCDateTime, nullable=False),
        Column("source", AutoString),
        Column("topic", AutoString, nullable=False),
        Column("payload_sha256", AutoString(64), nullable=False),
        Column("payload", LargeBinary, nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("next_attempt_at", UTCDateTime, nullable=False),
        Column("last_error", AutoString, nullable=False),
        UniqueConstraint("topic", "payload_sha256", name="uq_deferred_message"),
        Index("ix_deferred_due", "next_attempt_at"),
    )
    metadata.create_all(connection, checkfirst=True)


def _own_writes(connection: Connection) -> None:
    """7 -> 8: own_writes, the daemon's own manifest PUTs and deletes at destinations (the
    table as version 8 declares it)."""
    metadata = MetaData()
    Table(
        "own_writes",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("destination", AutoString(255), nullable=False),
        Column("repository", AutoString(255), nullable=False),
        Column("action", AutoString(16), nullable=False),
        Column("digest", AutoString(200), nullable=False),
        Column("tag", AutoString(128), nullable=False),
        Column("written_at", UTCDateTime, nullable=False),
        Column("echoed_at", UTCDateTime),
        Index("ix_own_writes_place", "destination", "repository"),
        Index("ix_own_writes_at", "written_at"),
    )
    metadata.create_all(connection, checkfirst=True)


# The step from each older version to the next.
def _upload_sessions(connection: Connection) -> None:
    """8 -> 9: upload_sessions, the blob uploads under way at destinations (the table as
    version 9 declares it)."""
    metadata = MetaData()
    Table(
        "upload_sessions",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("destination", AutoString(255), nullable=False),
        Column("repository", AutoString(255), nullable=False),
        Column("digest", AutoString(200), nullable=False),
        Column("location", AutoString, nullable=False),
        Column("offset", BigInteger, nullable=False),
        Column("updated_at", UTCDateTime, nullable=False),
        UniqueConstraint("destination", "repository", "digest", name="uq_upload_session"),
        Index("ix_upload_sessions_at", "updated_at"),
    )
    metadata.create_all(connection, checkfirst=True)


MIGRATIONS: dict[int, Migration] = {
    1: _add_claimed_by,
    2: _retention_indexes,
    3: _jobs_by_event,
    4: _count_deaths,
    5: _fleet_indexes,
    6: _deferred_messages,
    7: _own_writes,
    8: _upload_sessions,
}
