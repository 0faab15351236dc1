"""Opening the journal: the engine, SQLite's settings, the tables and the schema version."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlmodel import Session, SQLModel

from replicator import __version__
from replicator.errors import JournalError, SchemaError
from replicator.journal.integrity import check_integrity
from replicator.journal.migrations import MIGRATIONS
from replicator.journal.models import DEATHS_KEY, SCHEMA_VERSION, MetaRecord
from replicator.logs import get_logger

log = get_logger(__name__)

SCHEMA_VERSION_KEY = "schema_version"
# How long a SQLite connection waits for another process's write lock before failing: long
# enough for any journal transaction (milliseconds each) of a busy neighbour, short enough to
# surface a stuck process.
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Words of SQLite's messages for a file another process holds: waiting (or a restart) cures it.
# Any other refusal to open a SQLite file (a folder that does not exist, no permission, a file
# that is not a database) stays until someone changes the file or the config.
_SQLITE_PASSING = ("locked", "busy")
# Problems of a damaged journal named in the refusal; quick_check lists up to a hundred.
QUICK_CHECK_SHOWN = 3
# SQLite's message for SQLITE_CORRUPT, which a check of a badly damaged file may stop with.
CORRUPT_MESSAGE = "malformed"


def redacted(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable journal URL>"


def _configure_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout, FULL sync, and BEGIN IMMEDIATE for every transaction.

    WAL lets readers (the `status` command, metrics) work while a writer commits. synchronous=FULL
    because a bus message is acknowledged once its jobs are committed: with NORMAL, a power cut
    may roll back the last commits after the broker has forgotten the message; FULL costs one
    fsync of the WAL per commit, which the event rate affords. (A killed process is safe with
    either.) BEGIN IMMEDIATE takes the write lock when a transaction starts, so two processes
    never both read and then fail to upgrade to writing (SQLITE_BUSY without waiting). Reads
    take it too; every journal transaction lasts milliseconds, so they wait that long at most.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below start transactions instead of pysqlite.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_journal_engine(url: str) -> Engine:
    """An engine for `url`, with SQLite configured for crash safety and several processes."""
    try:
        engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
    except (ArgumentError, SQLAlchemyError, ImportError) as exc:
        raise JournalError(
            f"journal URL {redacted(url)} cannot be used: {exc}", temporary=False
        ) from exc
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


def _read_version(engine: Engine) -> int | None:
    if not inspect(engine).has_table(MetaRecord.__tablename__):
        return None
    with Session(engine) as session:
        record = session.get(MetaRecord, SCHEMA_VERSION_KEY)
        if record is None:
            return None
        try:
            return int(record.value)
        except ValueError:
            raise SchemaError(
                f"journal schema version {record.value!r} is not a number: "
                "the database is not a replicator journal, or it was damaged"
            ) from None


def _check_version(version: int, url: str) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"journal {redacted(url)} has schema version {version}, but replicator "
            f"{__version__} reads version {SCHEMA_VERSION}: run the newer replicator that wrote "
            "it, or point [journal] url at another database"
        )
    if version < SCHEMA_VERSION and version not in MIGRATIONS:
        raise SchemaError(
            f"journal {redacted(url)} has schema version {version}, which no replicator "
            f"release wrote (this one writes {SCHEMA_VERSION}): the database is damaged"
        )


def _create(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        # Inside one (on SQLite: IMMEDIATE) transaction, so two processes opening a new file
        # at once create the tables and the version row exactly once.
        SQLModel.metadata.create_all(session.connection())
        if session.get(MetaRecord, SCHEMA_VERSION_KEY) is None:
            session.add(MetaRecord(key=SCHEMA_VERSION_KEY, value=str(SCHEMA_VERSION)))
        if session.get(MetaRecord, DEATHS_KEY) is None:
            # Also for a journal migrated from before the counter: created here, once, under
            # the same lock, so recoveries only ever update it.
            session.add(MetaRecord(key=DEATHS_KEY, value="0"))


def _migrate(engine: Engine, url: str) -> None:
    """Bring an older journal to SCHEMA_VERSION, one version per transaction.

    The version is read again inside each transaction, its row locked (PostgreSQL) or the
    database write-locked (SQLite's BEGIN IMMEDIATE), so of two processes opening an old journal
    at once one migrates and the other finds it done.
    """
    meta = MetaRecord.metadata.tables["meta"]
    version_of = meta.c.key == SCHEMA_VERSION_KEY
    while True:
        with engine.begin() as connection:
            found = connection.execute(select(meta.c.value).where(version_of).with_for_update())
            version = int(found.scalar_one())
            if version >= SCHEMA_VERSION:
                return
            MIGRATIONS[version](connection)
            connection.execute(update(meta).where(version_of).values(value=str(version + 1)))
        log.info("journal_migrated", url=redacted(url), schema_version=version + 1)


def prepare(engine: Engine, url: str) -> None:
    """Check the schema version first, migrate an older one, then create what is missing;
    refuse a newer schema.

    The version is read before any CREATE so a journal from a newer release is left untouched.
    A SQLite file is checked first (`PRAGMA quick_check`), and a journal that has a schema is
    checked for its tables, columns and (PostgreSQL) indexes (journal/integrity.py): a damaged
    one is refused here, before the daemon takes a message it could not record.
    """
    try:
        if engine.dialect.name == "sqlite":
            _quick_check(engine, url)
        version = _read_version(engine)
        if version is not None:
            _check_version(version, url)
            if version < SCHEMA_VERSION:
                _migrate(engine, url)
            # A journal with a schema has all of it: a missing table is damage, not a table to
            # create (journal/integrity.py).
            check_integrity(engine, redacted(url))
        try:
            _create(engine)
        except DBAPIError:
            # Another process (PostgreSQL has no database-wide lock here) created the tables
            # between our check and our CREATE: theirs are as good as ours.
            _create(engine)
        version = _read_version(engine)
        assert version is not None
        _check_version(version, url)
    except SQLAlchemyError as exc:
        raise JournalError(
            f"journal {redacted(url)} cannot be opened: {_first_line(exc)}{_sqlite_hint(url)}",
            temporary=_passing(engine, exc),
        ) from exc


def _first_line(exc: SQLAlchemyError) -> str:
    """The error without SQLAlchemy's "(Background on this error at: <url>)" line."""
    return str(exc).split("\n(Background on this error", 1)[0]


def _sqlite_hint(url: str) -> str:
    """What to do when a SQLite journal's folder is missing or not writable, else ""."""
    if not url.startswith("sqlite:///"):
        return ""
    folder = Path(url.removeprefix("sqlite:///").split("?", 1)[0]).parent
    if not folder.is_dir():
        return f"; its folder {folder} does not exist: create it, or set journal.url elsewhere"
    if not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"; its folder {folder} is not writable by this user: give it write permission "
            "(SQLite writes its -wal and -shm files beside the journal), or set journal.url "
            "elsewhere"
        )
    return ""


def _quick_check(engine: Engine, url: str) -> None:
    """Refuse a SQLite journal whose pages are damaged (a bad disk, a torn copy): SQLite's
    quick_check reads every page and b-tree, O(size), a second for a journal of a million jobs."""
    try:
        with engine.connect() as connection:
            found = [str(row[0]) for row in connection.exec_driver_sql("PRAGMA quick_check")]
    except DBAPIError as exc:
        # Damage bad enough that the check itself stops (SQLITE_CORRUPT: "database disk image
        # is malformed"); anything else (locked, no such folder, not a database) is reported
        # as the file that cannot be opened, as before.
        if CORRUPT_MESSAGE not in str(exc.orig).lower():
            raise
        found = [str(exc.orig)]
    if found == ["ok"]:
        return
    shown = "; ".join(found[:QUICK_CHECK_SHOWN])
    raise JournalError(
        f"journal {redacted(url)} is damaged (PRAGMA quick_check: {shown}): restore it from a "
        "backup, or move it aside to start with an empty journal (then run `replicator "
        "backfill` to journal what the destinations miss)",
        temporary=False,
    )


def _passing(engine: Engine, exc: SQLAlchemyError) -> bool:
    """Whether a failure to open the journal may pass by itself: a SQLite file locked by another
    process, or a database server (PostgreSQL) that is not answering yet."""
    if engine.dialect.name != "sqlite":
        return True
    message = str(exc).lower()
    return any(word in message for word in _SQLITE_PASSING)
