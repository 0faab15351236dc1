"""A destination's outage in the journal: its waiting jobs released at once when it answers
again (with those FAILED for a temporary cause given a new chance), and the fact "unreachable
since T", kept in the meta table so that `status`, the CLI and every process of a fleet see it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from sqlalchemy import delete, insert, select, update
from sqlmodel import Session

from replicator.domain.jobs import TEMPORARY_FAILURES, JobState
from replicator.journal import job_rows
from replicator.journal.models import MetaRecord, from_db_time
from replicator.journal.queries import JOBS

_META = MetaRecord.metadata.tables["meta"]
# meta keys "unreachable:<a hash of the destination's name>" (keys are at most 64 characters,
# names unbounded) hold {"destination": name, "since": the ISO time its outage began}.
UNREACHABLE_PREFIX = "unreachable:"


def _key(destination: str) -> str:
    return UNREACHABLE_PREFIX + hashlib.sha256(destination.encode()).hexdigest()[:32]


def release(session: Session, destination: str, now: datetime) -> tuple[int, int]:
    """Every RETRY_WAIT job of `destination` due now (its backoff cut short), and its jobs
    FAILED for a temporary cause (attempts used up, process deaths) PENDING again; how many
    of each."""
    due_now = (
        update(JOBS)
        .where(
            JOBS.c.destination == destination,
            JOBS.c.state == JobState.RETRY_WAIT.value,
            JOBS.c.next_attempt_at > now,
        )
        .values(next_attempt_at=now, updated_at=now)
    )
    released = session.connection().execute(due_now).rowcount
    codes = [code.value for code in TEMPORARY_FAILURES]
    retried = job_rows.retry(session, None, now, codes, destination=destination)
    return released, retried


def set_unreachable(session: Session, destination: str, since: datetime | None) -> None:
    """Record that `destination` is unreachable since `since`, or (None) that it answers."""
    key = _key(destination)
    connection = session.connection()
    connection.execute(delete(_META).where(_META.c.key == key))
    if since is not None:
        value = json.dumps({"destination": destination, "since": since.isoformat()})
        connection.execute(insert(_META).values(key=key, value=value))


def unreachable(session: Session) -> dict[str, datetime]:
    """The destinations recorded unreachable, with when their outage began."""
    rows = session.connection().execute(
        select(_META.c.value).where(_META.c.key.startswith(UNREACHABLE_PREFIX))
    )
    found: dict[str, datetime] = {}
    for (value,) in rows:
        fact = json.loads(value)
        moment = from_db_time(datetime.fromisoformat(fact["since"]))
        if moment is not None:
            found[str(fact["destination"])] = moment
    return found
