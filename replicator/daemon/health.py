"""The daemon's watchdog and status line: WATCHDOG=1 only while `domain.fleet.health` finds it
healthy, and a STATUS= line for `systemctl status` whenever what it says changes.

    health = HealthWatch(notifier, journal, runner, metrics, broker_connected)
    tg.create_task(health.probe_journal())   # a write transaction opened and ended per interval
    tg.create_task(health.watch())           # judge, ping, status

Outside systemd (no $NOTIFY_SOCKET) both still run, so /metrics and the logs say the same; a
withheld ping is logged once (`watchdog_withheld`, with the reason), and its end too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from replicator.daemon.metrics import Metrics
from replicator.daemon.sd_notify import Notifier
from replicator.domain.fleet.health import Facts, Limits, unhealthy
from replicator.engine.runner import JobRunner
from replicator.errors import JournalError
from replicator.journal.store import Journal
from replicator.logs import get_logger

log = get_logger(__name__)

# Without a watchdog (WatchdogSec= unset, or not under systemd) the journal is probed and the
# status line refreshed this often: as often as systemd's default watchdog would ping.
UNWATCHED_INTERVAL_SECONDS = 15.0


class HealthWatch:
    """Gathers the facts `domain.fleet.health.unhealthy` judges, and acts on its answer."""

    def __init__(
        self,
        notifier: Notifier,
        journal: Journal,
        runner: JobRunner,
        metrics: Metrics,
        broker_connected: Callable[[], bool],
    ) -> None:
        self._notifier = notifier
        self._journal = journal
        self._runner = runner
        self._metrics = metrics
        self._broker_connected = broker_connected
        self.interval = notifier.watchdog_interval or UNWATCHED_INTERVAL_SECONDS
        self.limits = Limits.for_interval(self.interval)
        self._started = time.monotonic()
        self._journal_answered: float | None = None
        # Settings a reload could not apply, shown in the status line until a restart.
        self.restart_required: list[str] = []

    async def probe_journal(self) -> None:
        """Probe the journal once per interval, forever; a probe that hangs (a lock held, a
        database gone silent) simply leaves the last answer to age."""
        while True:
            try:
                await self._journal.probe()
                self._journal_answered = time.monotonic()
            except JournalError as exc:
                log.warning("journal_probe_failed", error=str(exc))
            await asyncio.sleep(self.interval)

    def reason(self) -> str | None:
        """Why the daemon is unhealthy now, or None."""
        progress = [t for t in (self._runner.progressed_at, self._metrics.exchanged_at) if t]
        facts = Facts(
            now=time.monotonic(),
            started=self._started,
            journal_answered=self._journal_answered,
            dispatcher_passed=self._runner.passed_at,
            jobs_running=len(self._runner.running),
            progressed=max(progress) if progress else None,
        )
        return unhealthy(facts, self.limits)

    def status_line(self, reason: str | None) -> str:
        """What `systemctl status` shows: health, broker, jobs, settings awaiting a restart."""
        parts = [f"unhealthy: {reason}" if reason else "running"]
        parts.append("broker connected" if self._broker_connected() else "broker not connected")
        parts.append(f"{len(self._runner.running)} jobs running")
        if self.restart_required:
            parts.append(f"restart to apply {', '.join(self.restart_required)}")
        return "; ".join(parts)

    async def watch(self) -> None:
        """Judge, ping when healthy, refresh the status line, forever."""
        withheld: str | None = None
        shown = ""
        while True:
            reason = self.reason()
            if reason is None:
                if self._notifier.watchdog_interval is not None:
                    self._notifier.watchdog()
                if withheld is not None:
                    log.info("watchdog_resumed", after=withheld)
            elif withheld is None:
                log.error("watchdog_withheld", reason=reason)
            withheld = reason
            status = self.status_line(reason)
            if status != shown:
                self._notifier.status(status)
                shown = status
            await asyncio.sleep(self.interval)
