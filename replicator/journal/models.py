"""The journal's tables (SQLModel) and the frozen rows the store hands out.

Timestamps are aware UTC datetimes in and out: SQLModel maps `datetime` fields to its UTCDateTime
type (`timestamp with time zone` on PostgreSQL, UTC text on SQLite, which compares in time order).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Column, Index, LargeBinary, Row, UniqueConstraint
from sqlmodel import Field, SQLModel

from replicator.domain.jobs import NO_ORIGIN, JobKey, JobKind, JobState
from replicator.domain.jobs.freshness import MAX_ORIGIN_CHARS

# The version of the tables below; bump it with a migration (schema.py) when they change.
# 2: jobs.claimed_by, the process holding an IN_PROGRESS job.
# 3: indexes on events.received_at and jobs.finished_at, for pruning by age (retention).
# 4: jobs.origin, the event a job is of, part of its unique key (a rollback is new work).
# 5: jobs.deaths and jobs.last_death, the process deaths a job was in flight at (in a row), and
#    the meta row numbering deaths.
# 6: indexes for a fleet's table of finished jobs (bench/journal_bench.py): jobs by repository
#    and tag (`status` of a tag), and by state and destination (the metrics' counts).
# 7: deferred_messages, bus messages whose tag-only push waits for its source to answer.
# 8: own_writes, the manifest PUTs and deletes the daemon makes at destinations, so their
#    events are known for echoes (domain/events/echoes.py).
# 9: upload_sessions, the blob uploads under way at destinations (their URL and the bytes the
#    registry acknowledged), so a restarted daemon goes on with them.
SCHEMA_VERSION = 9
# The meta row numbering the process deaths found with jobs in flight (see job_claims.resume).
DEATHS_KEY = "process_deaths"
# Longest claimer id stored ("<host>/<machine id>:<pid namespace>/<pid>/<boot id>:<ticks>",
# see claimers.py): a host name of at most 253 characters and about 120 more.
MAX_CLAIMER_CHARS = 512
# A distribution notification envelope holds a few events of about 1 KiB each; 64 KiB keeps every
# real payload whole while a hostile or broken publisher cannot grow the journal without bound.
MAX_STORED_PAYLOAD_BYTES = 64 * 1024
# Longest reason kept for an event or a job: a full registry error body is rarely useful beyond it.
MAX_REASON_CHARS = 2000
# The empty tag stands for "no tag" so the unique constraint holds on every database
# (NULLs are never equal to each other in a UNIQUE constraint).
NO_TAG = ""
# The name of the jobs table's unique key (a migration replaces it).
JOBS_KEY_CONSTRAINT = "uq_jobs_key"


class EventOutcome(StrEnum):
    """What became of a received bus event."""

    ACCEPTED = "accepted"
    IGNORED = "ignored"
    REJECTED = "rejected"
    # Kept aside: a tag it names could not be read at the source for now (deferred_messages).
    DEFERRED = "deferred"
    # The echo of the daemon's own write at that registry (a replica): no job
    # (domain/events/echoes.py).
    ECHO = "echo"


class EventRecord(SQLModel, table=True):
    """One received bus event, whatever became of it (rejected ones are the dead letter)."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_dedup", "source", "payload_sha256"),
        Index("ix_events_received", "received_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    received_at: datetime
    source: str | None = None
    topic: str
    payload_sha256: str = Field(max_length=64)
    payload_size: int
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    outcome: str = Field(max_length=16)
    reason: str = ""
    jobs_created: int = 0


class JobRecord(SQLModel, table=True):
    """One job: an image from a source registry to a destination registry."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint(
            "kind",
            "source",
            "repository",
            "digest",
            "tag",
            "destination",
            "origin",
            name=JOBS_KEY_CONSTRAINT,
        ),
        Index("ix_jobs_due", "state", "next_attempt_at"),
        Index("ix_jobs_image", "repository", "digest"),
        Index("ix_jobs_finished", "finished_at"),
        Index("ix_jobs_tag", "repository", "tag"),
        Index("ix_jobs_state_destination", "state", "destination"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)
    source: str = Field(max_length=255)
    repository: str = Field(max_length=255)
    digest: str = Field(max_length=200)
    tag: str = Field(default=NO_TAG, max_length=128)
    destination: str = Field(max_length=255)
    state: str = Field(max_length=16)
    attempts: int = 0
    next_attempt_at: datetime | None = None
    failure_code: str | None = Field(default=None, max_length=32)
    # Why the job FAILED, or what SUPERSEDED it (the source moved on since its event).
    failure_reason: str | None = None
    bytes_copied: int = 0
    blobs_copied: int = 0
    blobs_mounted: int = 0
    blobs_skipped: int = 0
    pushed_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # Who claimed the job last ("<host>/<pid>/<process start>", see claimers.py): an
    # IN_PROGRESS job whose claimer is a process gone from this host is an orphan at once.
    claimed_by: str | None = Field(default=None, max_length=MAX_CLAIMER_CHARS)
    # The event the job is of (domain.jobs.JobKey.origin); NO_ORIGIN for a scan's.
    origin: str = Field(default=NO_ORIGIN, max_length=MAX_ORIGIN_CHARS)
    # Process deaths in a row the job was in flight at, and the number of the last one (see
    # domain.jobs.after_death): counted apart from its attempts.
    deaths: int = 0
    last_death: int | None = None


class DeferredRecord(SQLModel, table=True):
    """A bus message kept aside because a tag-only push in it could not be read at its source
    for now (down, 5xx, a timeout): handled again from its whole payload when due."""

    __tablename__ = "deferred_messages"
    __table_args__ = (
        UniqueConstraint("topic", "payload_sha256", name="uq_deferred_message"),
        Index("ix_deferred_due", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    received_at: datetime
    source: str | None = None
    topic: str
    payload_sha256: str = Field(max_length=64)
    # Whole, never truncated: it is handled again (the bus caps a message at 1 MiB).
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # Reads of its tags that failed so far, and when it is handled again.
    attempts: int = 0
    next_attempt_at: datetime
    last_error: str = ""


class OwnWriteRecord(SQLModel, table=True):
    """A manifest PUT or delete the daemon makes at a registry, recorded just before it, so
    the event the registry sends about it is known for an echo (domain/events/echoes.py)."""

    __tablename__ = "own_writes"
    __table_args__ = (
        Index("ix_own_writes_place", "destination", "repository"),
        Index("ix_own_writes_at", "written_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # The registry written to (its name in the config).
    destination: str = Field(max_length=255)
    repository: str = Field(max_length=255)
    action: str = Field(max_length=16)
    # "" for a delete by tag whose digest was not known.
    digest: str = Field(default="", max_length=200)
    tag: str = Field(default=NO_TAG, max_length=128)
    written_at: datetime
    # When an event was matched to it (None: not yet): each write echoes one event at most.
    echoed_at: datetime | None = None


class UploadSessionRecord(SQLModel, table=True):
    """A blob upload under way at a destination: kept as its PATCHes are acknowledged, so a
    daemon killed mid-blob goes on from the registry's offset after its restart."""

    __tablename__ = "upload_sessions"
    __table_args__ = (
        UniqueConstraint("destination", "repository", "digest", name="uq_upload_session"),
        Index("ix_upload_sessions_at", "updated_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # The registry uploaded to (its name in the config).
    destination: str = Field(max_length=255)
    repository: str = Field(max_length=255)
    digest: str = Field(max_length=200)
    # The upload URL to go on at (it holds the session; registries sign state into it).
    location: str
    # Bytes the registry acknowledged.
    offset: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime


class MetaRecord(SQLModel, table=True):
    """Key/value facts about the journal itself, such as its schema version."""

    __tablename__ = "meta"

    key: str = Field(primary_key=True, max_length=64)
    value: str


def to_db_time(moment: datetime) -> datetime:
    """An aware datetime in UTC, as the tables store it; a naive one is a caller bug."""
    if moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: pass an aware UTC datetime")
    return moment.astimezone(UTC)


def from_db_time(moment: datetime | None) -> datetime | None:
    """A stored datetime as an aware UTC one (aggregates such as MIN() may lose the offset)."""
    if moment is None:
        return None
    if moment.utcoffset() is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _aware(moment: datetime) -> datetime:
    converted = from_db_time(moment)
    assert converted is not None
    return converted


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as read from the journal: a value, detached from any session."""

    id: int
    kind: JobKind
    source: str
    repository: str
    digest: str
    tag: str | None
    destination: str
    state: JobState
    attempts: int
    next_attempt_at: datetime | None
    failure_code: str | None
    failure_reason: str | None
    bytes_copied: int
    blobs_copied: int
    blobs_mounted: int
    blobs_skipped: int
    pushed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    claimed_by: str | None = None
    origin: str = NO_ORIGIN
    deaths: int = 0
    last_death: int | None = None

    @property
    def key(self) -> JobKey:
        """The job's identity."""
        return JobKey(
            self.source, self.repository, self.digest, self.tag, self.destination, self.kind,
            self.origin,
        )  # fmt: skip

    @classmethod
    def from_record(cls, record: JobRecord | Row[Any]) -> JobRow:
        """Copy an ORM record, or a whole row of the table, into a value."""
        assert record.id is not None
        return cls(
            id=record.id,
            kind=JobKind(record.kind),
            source=record.source,
            repository=record.repository,
            digest=record.digest,
            tag=record.tag or None,
            destination=record.destination,
            state=JobState(record.state),
            attempts=record.attempts,
            next_attempt_at=from_db_time(record.next_attempt_at),
            failure_code=record.failure_code,
            failure_reason=record.failure_reason,
            bytes_copied=record.bytes_copied,
            blobs_copied=record.blobs_copied,
            blobs_mounted=record.blobs_mounted,
            blobs_skipped=record.blobs_skipped,
            pushed_at=from_db_time(record.pushed_at),
            created_at=_aware(record.created_at),
            updated_at=_aware(record.updated_at),
            started_at=from_db_time(record.started_at),
            finished_at=from_db_time(record.finished_at),
            claimed_by=record.claimed_by,
            origin=record.origin,
            deaths=record.deaths,
            last_death=record.last_death,
        )


@dataclass(frozen=True, slots=True)
class EventRow:
    """A recorded bus event as read from the journal."""

    id: int
    received_at: datetime
    source: str | None
    topic: str
    payload_sha256: str
    payload_size: int
    payload: bytes
    outcome: EventOutcome
    reason: str
    jobs_created: int

    @classmethod
    def from_record(cls, record: EventRecord) -> EventRow:
        """Copy an ORM record into a value."""
        assert record.id is not None
        return cls(
            id=record.id,
            received_at=_aware(record.received_at),
            source=record.source,
            topic=record.topic,
            payload_sha256=record.payload_sha256,
            payload_size=record.payload_size,
            payload=bytes(record.payload),
            outcome=EventOutcome(record.outcome),
            reason=record.reason,
            jobs_created=record.jobs_created,
        )
