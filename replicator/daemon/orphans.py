"""Jobs a dead process left IN_PROGRESS: queued again at start and by a sweep while the daemon
runs, and those set aside instead (FAILED PROCESS_DIED, in flight at too many deaths) reported as
every failed job is — counted at once, their result events published once the broker is reached.

Alone, an IN_PROGRESS job at start is ours, orphaned by a crash, unless a process of this host
still runs it (a backfill sharing the journal). In a fleet (shared group) peers may be running
theirs right now: only jobs of processes gone from this host go back, and jobs claimed long
enough ago (`[workers] orphan_after`) that no live daemon can still be copying them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from replicator.config.model import WorkersConfig
from replicator.daemon.bus import Bus
from replicator.daemon.result_events import ResultPublisher
from replicator.domain import jobs as job_rules
from replicator.engine.job_queue import JobEnd, JobObserver
from replicator.engine.pauses import sleep_until
from replicator.errors import BusError, JournalError
from replicator.journal.claimers import resume_orphans
from replicator.journal.models import JobRow
from replicator.journal.store import Journal
from replicator.logs import get_logger

log = get_logger(__name__)

# How long the daemon waits for the broker before warning that it is not connected yet (it keeps
# trying afterwards, and jobs already journalled run meanwhile).
CONNECT_WAIT_SECONDS = 10.0
# The daemon looks for orphans ([workers] orphan_after) ten times per that age: a dead peer's
# jobs wait at most a tenth longer than the age, a dead local process's at most a tenth of it,
# for two cheap queries a sweep.
ORPHAN_SWEEPS_PER_AGE = 10
# A claim time no job has: a sweep with it re-queues only the jobs of dead local processes.
_NO_AGE = datetime(1970, 1, 1, tzinfo=UTC)


class Orphans:
    """One daemon's handling of the jobs dead processes left behind."""

    def __init__(
        self,
        journal: Journal,
        workers: Callable[[], WorkersConfig],
        observers: Sequence[JobObserver],
        *,
        fleet: bool,
    ) -> None:
        self._journal = journal
        self._workers = workers  # the config's, as reloaded
        self._observers = observers  # the daemon's list: the result publisher joins it later
        self._fleet = fleet
        # Jobs set aside at start, before the bus was up: published by `announce`.
        self._at_start: list[JobEnd] = []

    async def resume_at_start(self, counted: JobObserver) -> int:
        """Queue again what dead processes left; how many. A job set aside is told to
        `counted` (the metrics) now, its result published by `announce`."""

        async def set_aside(row: JobRow) -> None:
            end = _set_aside_end(row)
            await counted.job_ended(end)
            self._at_start.append(end)

        return await resume_orphans(
            self._journal,
            started_before=self._orphaned_before() if self._fleet else None,
            max_deaths=self._workers().max_deaths,
            on_set_aside=set_aside,
        )

    async def sweep_forever(self, leading: Callable[[], bool], stopping: asyncio.Event) -> None:
        """Re-queue jobs a dead process left IN_PROGRESS: a peer of the fleet, or a backfill
        killed on this host while sharing the journal. Every member re-queues those of dead
        processes of its own host (known dead at once); the jobs of other hosts' processes,
        taken for orphans by their age, are swept while `leading` (the chores lease) alone."""
        while not stopping.is_set():
            await sleep_until(self._workers().orphan_after / ORPHAN_SWEEPS_PER_AGE, stopping)
            if stopping.is_set():
                return
            try:
                await resume_orphans(
                    self._journal,
                    started_before=self._orphaned_before() if leading() else _NO_AGE,
                    max_deaths=self._workers().max_deaths,
                    on_set_aside=self._set_aside,
                )
            except JournalError as exc:
                log.warning("orphan_sweep_failed", error=str(exc))

    async def announce(self, bus: Bus, publisher: ResultPublisher) -> None:
        """Once the broker is reached, publish the results of the jobs set aside at start."""
        try:
            await bus.wait_connected(CONNECT_WAIT_SECONDS)
        except BusError as exc:
            log.warning("mqtt_not_yet_connected", error=str(exc))
            await bus.connected.wait()
        while self._at_start:
            await publisher.job_ended(self._at_start.pop(0))

    async def _set_aside(self, row: JobRow) -> None:
        """A job set aside by a sweep: reported as every FAILED job is (metrics, result)."""
        for observer in self._observers:
            await observer.job_ended(_set_aside_end(row))

    def _orphaned_before(self) -> datetime:
        """A job claimed before this moment by a process not of this host is an orphan."""
        return datetime.now(UTC) - timedelta(seconds=self._workers().orphan_after)


def _set_aside_end(row: JobRow) -> JobEnd:
    """How a job set aside at recovery (FAILED PROCESS_DIED) ended, as observers are told."""
    code = None if row.failure_code is None else job_rules.failure_code(row.failure_code)
    return JobEnd(row.key, row.state, row.pushed_at, code, row.failure_reason)
