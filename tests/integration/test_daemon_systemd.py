"""The daemon as systemd sees it over a real $NOTIFY_SOCKET: READY=1 once the journal is open
and the workers run (not waiting for the broker), and WATCHDOG=1 only while it is healthy."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from replicator.domain.jobs import JobKey
from replicator.journal.claimers import open_journal
from tests.support.daemon import (
    USE1,
    USW2,
    DaemonProcess,
    DaemonSettings,
    Stack,
    manifest_present,
    metric_value,
    topology,
    wait_for,
    write_config,
)
from tests.support.images import LayerSpec, OCILayout
from tests.support.journal_fixtures import pushed
from tests.support.layout_push import push_over_http
from tests.support.notify_socket import NotifyListener
from tests.support.ports import free_port
from tests.support.registry_fixtures import RegistryFactory
from tests.support.stack_fixtures import StackFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KIB = 1024
# WATCHDOG_USEC given to the daemon: it pings every second (half of it), so a test sees
# several pings, and their absence, within seconds.
WATCHDOG_USEC = 2_000_000
PING_SECONDS = WATCHDOG_USEC / 1_000_000 / 2
# Start-up, recovery and a copy take a second or two; 30 s covers a loaded 2-core machine.
WITHIN_SECONDS = 30.0
# How long the journal is held locked: several ping intervals past the daemon's limit for a
# journal that does not answer (two intervals), so a ping sent while stuck cannot hide.
LOCKED_SECONDS = 8.0
# Pings already on their way when the lock is taken, or judged on a probe just before it,
# arrive within this of the lock: the daemon's limit plus a second of scheduling slack.
SETTLING_SECONDS = 2 * 2 * PING_SECONDS + 1.0


def notified_daemon(stack: Stack, notify: NotifyListener, log_name: str) -> DaemonProcess:
    """A daemon on the stack's config, its $NOTIFY_SOCKET the listener, a watchdog asked."""
    return DaemonProcess(
        stack.config,
        stack.settings.http_port,
        stack.folder / log_name,
        env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": str(WATCHDOG_USEC)},
    )


@pytest.fixture
def stack(stack_factory: StackFactory) -> Stack:
    """Registries, broker and bridge; the test starts its own daemon."""
    return stack_factory(start_daemon=False)


class TestWatchdog:
    def test_a_stuck_journal_stops_the_pings(self, stack: Stack) -> None:
        """With another process holding the SQLite journal's write lock, WATCHDOG=1 stops
        (after the daemon's limit) and STATUS says the journal does not answer; once the lock
        is released the pings come back."""
        journal = stack.folder / "journal.db"
        with NotifyListener() as notify:
            daemon = notified_daemon(stack, notify, "stuck.log").start()
            try:
                wait_for(
                    lambda: len(notify.times_of("WATCHDOG=1")) >= 2,
                    timeout=WITHIN_SECONDS,
                    what="two watchdog pings",
                )
                holder = sqlite3.connect(journal, isolation_level=None, timeout=WITHIN_SECONDS)
                holder.execute("BEGIN EXCLUSIVE")
                locked_at = time.monotonic()
                time.sleep(LOCKED_SECONDS)
                stuck = [
                    t for t in notify.times_of("WATCHDOG=1") if t > locked_at + SETTLING_SECONDS
                ]
                statuses = notify.statuses()
                holder.execute("ROLLBACK")
                released_at = time.monotonic()
                holder.close()
                assert stuck == [], f"{len(stuck)} pings while the journal was locked"
                assert any("journal" in status for status in statuses), statuses
                wait_for(
                    lambda: any(t > released_at for t in notify.times_of("WATCHDOG=1")),
                    timeout=WITHIN_SECONDS,
                    what="a ping once the journal answers again",
                )
            finally:
                daemon.stop()


def _journal_job(url: str, key: JobKey) -> None:
    """Record a push event and its job in the journal, as intake would have before a stop."""

    async def record() -> None:
        async with await open_journal(url) as journal:
            await journal.record_event(
                pushed(b"{}", [key], pushed_at=datetime.now(UTC), source=key.source)
            )

    asyncio.run(record())


class TestReadiness:
    def test_broker_down_at_start(self, registry_factory: RegistryFactory, tmp_path: Path) -> None:
        """A daemon whose broker does not answer still says READY=1 (journal open, workers
        running), copies the job already in its journal, and shows the broker as down in
        replicator_broker_connected and its STATUS line."""
        registries = {name: registry_factory() for name in (USE1, USW2, "euw1")}
        settings = DaemonSettings(
            broker_port=free_port(),  # nothing listens there
            journal_url=f"sqlite:///{tmp_path / 'journal.db'}",
            client_id="brokerless",
        )
        urls = {name: registry.url for name, registry in registries.items()}
        config = write_config(tmp_path, topology(urls), settings)
        layout = OCILayout(tmp_path / "layout")
        image = layout.image("v1", [LayerSpec(7, 4 * KIB)], label="v1")
        push_over_http(layout.path, "v1", urls[USE1], "prod/app")
        _journal_job(settings.journal_url, JobKey(USE1, "prod/app", image.digest, "v1", USW2))
        with NotifyListener() as notify:
            daemon = DaemonProcess(
                config,
                settings.http_port,
                env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": str(WATCHDOG_USEC)},
            ).start(ready=False)
            try:
                wait_for(
                    lambda: "READY=1" in notify.lines() or not daemon.running,
                    timeout=WITHIN_SECONDS,
                    what="READY=1 without a broker",
                )
                assert daemon.running, daemon.log_tail()
                wait_for(
                    lambda: manifest_present(urls[USW2], "prod/app", "v1"),
                    timeout=WITHIN_SECONDS,
                    what="the journalled job copied",
                )
                assert metric_value(daemon.metrics(), "replicator_broker_connected") == 0
                assert any("broker" in status for status in notify.statuses())
                assert notify.times_of("WATCHDOG=1"), "no watchdog ping without a broker"
            finally:
                daemon.stop()
