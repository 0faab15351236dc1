"""The Journal: an async store of events and jobs over any SQLAlchemy URL, safe to share
between processes. Its parts, by concept: transactions.py (one worker thread, a transaction per
call), job_store.py (jobs), intake_store.py (events, messages kept aside), fleet_store.py
(leases, outages, own writes, uploads, gauges, retention).
"""

from __future__ import annotations

from replicator.journal.fleet_store import FleetStore
from replicator.journal.intake_store import IntakeStore
from replicator.journal.job_store import JobStore
from replicator.journal.schema import create_journal_engine, prepare, redacted
from replicator.logs import get_logger

log = get_logger(__name__)


class Journal(JobStore, IntakeStore, FleetStore):
    """The durable record of events and jobs; async, and safe to share between processes."""

    @classmethod
    async def open(cls, url: str, *, claimer: str) -> Journal:
        """Open (creating if needed) the journal at a SQLAlchemy URL; refuse a newer schema.
        `claimer` names this process on the jobs it claims (see claimers.py)."""
        journal = cls(create_journal_engine(url), url, claimer=claimer)
        try:
            await journal._call(prepare, journal._engine, url)
        except BaseException:
            await journal.close()
            raise
        log.info("journal_opened", url=redacted(url), dialect=journal.dialect)
        return journal
