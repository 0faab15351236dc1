"""A SQLite journal with damaged pages is refused at start, with a clear message, before the
daemon takes any message (it used to start ready and retry its first message for ever)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from pathlib import Path

import pytest

from replicator.domain.jobs import JobKey
from replicator.journal.claimers import open_journal
from tests.support.daemon import DaemonProcess, DaemonSettings, RegistrySpec, write_config
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
