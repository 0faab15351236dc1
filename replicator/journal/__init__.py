"""The journal: every received event and every job, durable, on any SQLAlchemy database."""

from replicator.journal.models import SCHEMA_VERSION, EventOutcome, EventRow, JobRow
from replicator.journal.store import Journal

__all__ = ["SCHEMA_VERSION", "EventOutcome", "EventRow", "JobRow", "Journal"]
