"""The persistent MQTT sessions a daemon has made, in the journal's `meta` table: a daemon that
restarts knows the broker should still hold its session, so a broker restarted without its
store (persistence off, its file lost) or a session expired while the daemon was down is
reported and reconciled at once, not taken for a first start (its events are gone; the next
reconcile pass, 900 s away by default, was the only one to find their pushes).

One row per (client id, broker): key `mqtt_session:<SHA-256 of both, shortened>` (the key column
holds 64 characters; client ids can be longer), value the two and the first connection's time,
as JSON, for a person reading the table."""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from replicator.journal.models import MetaRecord
from replicator.journal.queries import execute

_META: Table = MetaRecord.metadata.tables["meta"]
_PREFIX = "mqtt_session:"
# Hex digits of the SHA-256 kept in the key: 13 + 48 fits the 64-character key column, and 192
# bits tell apart any two (client id, broker) pairs a journal will ever see.
_HASH_CHARS = 48


def _key(client_id: str, broker: str) -> str:
    hashed = hashlib.sha256(f"{client_id}\n{broker}".encode()).hexdigest()
    return f"{_PREFIX}{hashed[:_HASH_CHARS]}"


def made(session: Session, client_id: str, broker: str) -> bool:
    """Whether a persistent session of `client_id` was made at `broker` before."""
    statement = select(_META.c.key).where(_META.c.key == _key(client_id, broker))
    return execute(session, statement).first() is not None


def remember(session: Session, client_id: str, broker: str, now: float) -> None:
    """Record that `client_id` made its persistent session at `broker` (at `now`, seconds since
    the epoch); a session already recorded is left as it is."""
    if made(session, client_id, broker):
        return
    value = json.dumps({"client_id": client_id, "broker": broker, "since": now})
    try:
        with session.begin_nested():
            execute(session, insert(_META).values(key=_key(client_id, broker), value=value))
    except IntegrityError:
        pass  # recorded at the same moment by another process with the same client id
