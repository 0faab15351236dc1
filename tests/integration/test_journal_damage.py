"""A SQLite journal with damaged pages is refused at start, with a clear message, before the
daemon takes any message (it used to start ready and retry its first message for ever)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from replicator.domain.jobs import JobKey
from replicator.errors import JournalError
from replicator.journal.claimers import open_journal
from tests.support.daemon import DaemonProcess, DaemonSettings, RegistrySpec, write_config
from tests.support.journal_fixtures import PostgresServer
from tests.support.mqtt_fixtures import Mosquitto
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

# Jobs written first, so the jobs table spans many pages and a damaged one is in the middle.
JOBS = 2000
# SQLite's default page size; pages 10 to 13 are b-tree pages of the jobs table or its indexes.
PAGE = 4096
DAMAGED_PAGES = range(10, 14)
# The daemon refuses within this (it reads the journal first thing).
REFUSED_WITHIN_SECONDS = 20.0
# Exit code for a journal that cannot be opened (sysexits EX_IOERR, see README).
EXIT_IOERR = 74


async def _fill(url: str) -> None:
    async with await open_journal(url) as journal:
        keys = [
            JobKey("src", f"team/app{n}", "sha256:" + f"{n:064x}", f"v{n}", "dst")
            for n in range(JOBS)
        ]
        await journal.add_jobs(keys)


def _damage(database: Path) -> None:
    """Overwrite a few pages in the middle of the file with noise (a bad disk, a torn copy)."""
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    noise = random.Random(23)
    with database.open("r+b") as file:
        for page in DAMAGED_PAGES:
            file.seek(page * PAGE)
            file.write(bytes(noise.randrange(256) for _ in range(PAGE)))


class TestDamagedJournal:
    """PRAGMA quick_check at start."""

    def test_damaged_journal_refused_at_start(self, mosquitto: Mosquitto, tmp_path: Path) -> None:
        """The daemon exits 74 naming the damage (quick_check) and what to do, and never
        reports ready."""
        database = tmp_path / "journal.db"
        url = f"sqlite:///{database}"
        asyncio.run(_fill(url))
        _damage(database)
        settings = DaemonSettings(broker_port=mosquitto.port, journal_url=url, client_id="damaged")
        specs = [
            RegistrySpec("src", "111122223333", "us-east-1", f"http://127.0.0.1:{free_port()}"),
            RegistrySpec("dst", "111122223333", "us-west-2", f"http://127.0.0.1:{free_port()}"),
        ]
        daemon = DaemonProcess(write_config(tmp_path, specs, settings), settings.http_port)
        daemon.start(ready=False)
        try:
            deadline = time.monotonic() + REFUSED_WITHIN_SECONDS
            while daemon.running and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not daemon.running, f"still running\n{daemon.log_tail()}"
            assert daemon.wait() == EXIT_IOERR, daemon.log_tail()
            log = daemon.log_path.read_text()
            assert "quick_check" in log, daemon.log_tail()
            assert "daemon_ready" not in log
        finally:
            daemon.stop()


def _execute(url: str, *statements: str) -> None:
    """Run SQL on the journal's database directly (a partial restore, a DROP by hand)."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))
    finally:
        engine.dispose()


async def _open_and_close(url: str) -> None:
    async with await open_journal(url):
        pass


class TestIntegrity:
    """A journal that has a schema is checked for all of it at open (journal/integrity.py)."""

    @pytest.mark.parametrize(
        ("damage", "named"),
        [
            ("DROP TABLE upload_sessions", "upload_sessions missing"),
            ("ALTER TABLE jobs DROP COLUMN claimed_by", "jobs lacks column(s) claimed_by"),
        ],
        ids=["table-dropped", "column-dropped"],
    )
    def test_lost_table_or_column_refused(self, journal_url: str, damage: str, named: str) -> None:
        """A journal missing a table or a column of its schema is refused, permanently, naming
        what is missing and what to do; the table is not created again empty."""
        asyncio.run(_fill(journal_url))
        _execute(journal_url, damage)
        with pytest.raises(JournalError) as refused:
            asyncio.run(_open_and_close(journal_url))
        assert not refused.value.temporary
        assert named in str(refused.value), str(refused.value)
        assert "restore it from a backup" in str(refused.value)

    def test_invalid_index_refused(self, postgres_server: PostgresServer) -> None:
        """A PostgreSQL journal with an invalid index (a failed CREATE INDEX CONCURRENTLY leaves
        one) is refused naming it."""
        url = postgres_server.create_database()
        asyncio.run(_fill(url))
        _execute(
            url,
            "UPDATE pg_index SET indisvalid = false "
            "WHERE indexrelid = CAST('ix_jobs_due' AS regclass)",
        )
        with pytest.raises(JournalError, match=r"invalid index\(es\) ix_jobs_due"):
            asyncio.run(_open_and_close(url))

    def test_sound_journal_passes_amcheck(self, postgres_server: PostgresServer) -> None:
        """With amcheck installed in its database, a sound journal's B-tree indexes are each
        checked with bt_index_check and it opens (no false refusal)."""
        url = postgres_server.create_database()
        asyncio.run(_fill(url))
        _execute(url, "CREATE EXTENSION IF NOT EXISTS amcheck")
        asyncio.run(_open_and_close(url))
