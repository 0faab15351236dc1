"""Leases in the journal's database: a fleet's duties held by one member at a time.

A lease is a row of the `meta` table (key `lease:<name>`, value the holder and its expiry in
seconds since the epoch, as JSON), so SQLite and PostgreSQL journals hold them alike and no
schema change was needed. The row is read FOR UPDATE (PostgreSQL) or under the write lock
every SQLite transaction takes (BEGIN IMMEDIATE): two members asking at once are decided one
after the other. The decision is domain.fleet.leases.ask. Expiry times come from the asking member's
clock: the hosts of a fleet keep their clocks in sync, as the jobs' due times already require.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy import Table, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from replicator.domain.fleet.leases import Lease, ask, give_up
from replicator.journal.models import MetaRecord
from replicator.journal.queries import execute

_META: Table = MetaRecord.metadata.tables["meta"]
_PREFIX = "lease:"


def _key(name: str) -> str:
    return f"{_PREFIX}{name}"


def _parse(value: str) -> Lease | None:
    """A stored lease; None for a value this program cannot read (taken for a free lease)."""
    try:
        document = json.loads(value)
        return Lease(str(document["holder"]), float(document["expires"]))
    except (ValueError, KeyError, TypeError):
        return None


def _value(lease: Lease) -> str:
    return json.dumps({"holder": lease.holder, "expires": lease.expires})


def _current(session: Session, name: str) -> tuple[bool, Lease | None]:
    """Whether the lease's row exists, and the lease it holds; the row locked."""
    statement = select(_META.c.value).where(_META.c.key == _key(name)).with_for_update()
    row = execute(session, statement).first()
    return row is not None, None if row is None else _parse(row.value)


def current(session: Session, name: str) -> Lease | None:
    """Lease `name` as stored (None: never held), read without locking it."""
    statement = select(_META.c.value).where(_META.c.key == _key(name))
    row = execute(session, statement).first()
    return None if row is None else _parse(row.value)


def take(
    session: Session,
    name: str,
    holder: str,
    now: float,
    term: float,
    *,
    gone: Callable[[str], bool] | None = None,
) -> tuple[Lease, bool]:
    """Ask for lease `name` in the name of `holder` at `now` for `term` seconds (see
    domain.fleet.leases.ask; `gone` tells whether a holder is known dead); the lease in force
    afterwards, `holder`'s or another's, and whether the lease had been held before (its row
    outlives its holders: a released lease expires)."""
    exists, current = _current(session, name)
    holder_gone = (
        current is not None
        and current.holder != holder
        and current.expires > now
        and gone is not None
        and gone(current.holder)
    )
    lease = ask(current, holder, now, term, holder_gone=holder_gone)
    if lease == current:
        return lease, exists
    if exists:
        _write(session, name, lease)
        return lease, True
    try:
        with session.begin_nested():
            execute(session, insert(_META).values(key=_key(name), value=_value(lease)))
    except IntegrityError:
        # Another member created the row at the same moment (PostgreSQL): it holds the lease.
        _, current = _current(session, name)
        return current or lease, True
    return lease, False


def _write(session: Session, name: str, lease: Lease) -> None:
    execute(session, update(_META).where(_META.c.key == _key(name)).values(value=_value(lease)))


def release(session: Session, name: str, holder: str) -> bool:
    """End lease `name` now if `holder` holds it (a member stopping hands it on at once);
    whether it did."""
    _, current = _current(session, name)
    if current is None or not give_up(current, holder):
        return False
    _write(session, name, Lease(holder, 0.0))
    return True
