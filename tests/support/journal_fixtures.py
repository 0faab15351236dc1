"""Journal fixtures: a journal URL on SQLite and on a PostgreSQL started for the session.

Also a small program run as a separate process by the multi-process journal tests:
    python -m tests.support.journal_fixtures claim URL      claim and complete until none is due
    python -m tests.support.journal_fixtures write URL N    record events N, N+1, ... until killed
Each prints one line per committed step, so the parent knows what is durable.
"""

from __future__ import annotations

import asyncio
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from replicator.domain.jobs import JobKey
from replicator.domain.jobs.ends import Completed, CopyCounters
from replicator.journal import Journal
from replicator.journal.claimers import open_journal
from replicator.journal.event_rows import ReceivedEvent
from replicator.journal.models import EventOutcome
from tests.support.ports import free_port, wait_listening
from tests.support.scratch import scratch_parent

# Destinations each event of the `write` program fans out to: several jobs per transaction, so a
# kill can land between the inserts of one event.
WRITER_DESTINATIONS = ("usw2", "euw1", "apse1")
# Jobs a `claim` program takes per transaction: small, so claimers interleave often.
CLAIM_BATCH = 3
POSTGRES_USER = "replicator"
# The cluster lives in memory where it can (tests/support/scratch.py): every database a test
# creates is ~300 files (7 MB), and journal_url drops its database after the test. WAL is
# recycled past this size, so it stays small in memory too.
MAX_WAL = "256MB"
_database_numbers = itertools.count(1)


def pushed(
    payload: bytes,
    keys: Sequence[JobKey],
    *,
    pushed_at: datetime,
    source: str = "use1",
    outcome: EventOutcome = EventOutcome.ACCEPTED,
    reason: str = "",
    **fields: Any,
) -> ReceivedEvent:
    """A push event from `source` as intake records it, with the jobs `keys` (accepted unless
    told); `fields` are more of ReceivedEvent's (denied, part, not_before, supersede...)."""
    return ReceivedEvent(
        source=source,
        topic=f"registry/{source}/events",
        payload=payload,
        outcome=outcome,
        reason=reason,
        job_keys=list(keys),
        pushed_at=pushed_at,
        **fields,
    )


def writer_digest(number: int) -> str:
    """The digest the `write` program gives event `number`."""
    return f"sha256:{number:064x}"


def writer_keys(number: int) -> list[JobKey]:
    """The job keys of event `number` of the `write` program."""
    return [
        JobKey("use1", "app", writer_digest(number), f"t{number}", destination)
        for destination in WRITER_DESTINATIONS
    ]


@dataclass(frozen=True)
class PostgresServer:
    """A PostgreSQL cluster started for the test session."""

    host: str
    port: int
    user: str

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of one database of the cluster."""
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """Create an empty database; its URL."""
        name = f"journal_{os.getpid()}_{next(_database_numbers)}"
        self._execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database create_database made, closing what is still connected to it."""
        self._execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')

    def _execute(self, statement: str) -> None:
        import psycopg2

        connection = psycopg2.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres"
        )
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def postgres_bin() -> Path:
    """The folder of the PostgreSQL programs the session's server runs (psql, pg_dump...)."""
    found = _postgres_bin()
    if found is None:
        raise FileNotFoundError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin)")
    return found


def _run_as_server_user(command: list[str], *, check: bool = True) -> None:
    """Run a PostgreSQL tool; root cannot run postgres, so as the Debian package's `postgres`."""
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{command} failed ({result.returncode}): {result.stderr[-2000:]}")


class PostgresNotAvailable(RuntimeError):
    """PostgreSQL cannot run on this machine (not installed, no user to run it as)."""


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster in a temporary folder on a free loopback port until the block ends
    (the session's, and a bench's); PostgresNotAvailable when it cannot run here."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        raise PostgresNotAvailable("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin)")
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresNotAvailable(
                "running as root and there is no `postgres` user to run PostgreSQL as"
            ) from None
    # Not under pytest's tmp_path: its parent is private to root, the server user could not enter.
    base = Path(tempfile.mkdtemp(prefix="replicator-pg-", dir=scratch_parent()))
    if os.geteuid() == 0:
        os.chown(base, account.pw_uid, account.pw_gid)
    data, port = base / "data", free_port()
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", POSTGRES_USER, "-A", "trust"]
    # fsync off: the tests kill clients, never the server, so its durability is not tested.
    options = (
        f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off -c full_page_writes=off"
        f" -c max_wal_size={MAX_WAL}"
    )
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log")]
    try:
        _run_as_server_user([*initdb, "-E", "UTF8", "--no-locale", "--no-sync"])
        _run_as_server_user([*pg_ctl, "-w", "-t", "60", "-o", options, "start"])
        wait_listening(port)
        yield PostgresServer("127.0.0.1", port, POSTGRES_USER)
    finally:
        _run_as_server_user([*pg_ctl, "-m", "immediate", "stop"], check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the session (skipped where PostgreSQL cannot run)."""
    try:
        with running_postgres() as server:
            yield server
    except PostgresNotAvailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty journal's URL: a SQLite file in tmp_path, or a new PostgreSQL database (dropped
    after the test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'journal.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database()
    yield url
    server.drop_database(url)


@pytest.fixture
async def journal(journal_url: str) -> AsyncIterator[Journal]:
    """An open, empty journal on each database kind; closed after the test."""
    opened = await open_journal(journal_url)
    try:
        yield opened
    finally:
        await opened.close()


def journal_program(*args: str) -> list[str]:
    """The command line running this module's program with `args`."""
    return [sys.executable, "-m", "tests.support.journal_fixtures", *args]


async def _claim_all(url: str) -> None:
    async with await open_journal(url) as journal:
        while claimed := await journal.claim_due(CLAIM_BATCH, datetime.now(UTC)):
            for row in claimed:
                await journal.end(
                    row.id,
                    Completed(CopyCounters(bytes_copied=1, blobs_copied=1)),
                )
                print(row.id, flush=True)


async def _write_forever(url: str, start: int) -> None:
    async with await open_journal(url) as journal:
        for number in itertools.count(start):
            await journal.record_event(
                pushed(f"event {number}".encode(), writer_keys(number), pushed_at=datetime.now(UTC))
            )
            print(number, flush=True)


def main(argv: list[str]) -> None:
    """Run the `claim` or `write` program (see the module docstring)."""
    from replicator import logs

    logs.configure(level="warning")  # to stderr: stdout carries the committed steps
    mode, url, *rest = argv
    if mode == "claim":
        asyncio.run(_claim_all(url))
    elif mode == "write":
        asyncio.run(_write_forever(url, int(rest[0])))
    else:
        raise SystemExit(f"unknown mode {mode!r}: claim or write")


if __name__ == "__main__":
    main(sys.argv[1:])
