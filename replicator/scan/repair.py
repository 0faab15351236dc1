"""Repairs: images whose jobs the journal holds COMPLETE (or SUPERSEDED) but which a destination
lost since (deleted by hand, storage lost). Both states are final, so a scan cannot queue them
again; it finds them as repairs (domain.routing.scan.TagAction.REPAIR), copied again here
through the job runner (engine/runner.py `run_outside`): within `[workers] concurrency` and the
destination's `per_registry` slots, as the jobs it claims. The rows keep their state (true again
once this succeeds).

Repairs run as the scan finds them, a page at a time (RepairStream): a bounded queue between
the scan and the workers, so a pass that finds every image of a million lost holds a page of
them, not all — and a bounded tally of the results.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

from replicator.domain.jobs import JobKey
from replicator.domain.routing import Site
from replicator.domain.routing.scan import TagAction, TagPlan
from replicator.engine.copier import CopyStats
from replicator.engine.gather import task_group
from replicator.engine.runner import JobRunner
from replicator.errors import ReplicatorError
from replicator.logs import get_logger
from replicator.scan.run_jobs import REPORTED_ROWS, RowsByTag

if TYPE_CHECKING:
    from replicator.journal.models import JobRow

log = get_logger(__name__)

# Repairs found and not yet started, at most: the scan waits for places before it hands on
# more. One page of tags: the scan holds that much anyway.
REPAIRS_QUEUED = 1_000


@dataclass(frozen=True, slots=True)
class RepairResult:
    """A repair of a COMPLETE job's image: what it copied, or why it failed."""

    key: JobKey
    stats: CopyStats | None
    error: str | None = None


@dataclass(slots=True)
class RepairTally:
    """The repairs of a scan: counts per destination, and the first REPORTED_ROWS failures."""

    repaired: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    bytes: Counter[str] = field(default_factory=Counter)
    failures: list[RepairResult] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Repairs tried."""
        return self.repaired.total() + self.failed.total()

    def add(self, result: RepairResult) -> None:
        """Count one repair's result."""
        destination = result.key.destination
        if result.error is None:
            self.repaired[destination] += 1
            self.bytes[destination] += result.stats.bytes_copied if result.stats else 0
            return
        self.failed[destination] += 1
        if len(self.failures) < REPORTED_ROWS:
            self.failures.append(result)


class RepairStream:
    """Runs repairs as a scan hands them on (`await stream(source, repository, plans)`):
    looks up the journal rows of a page's repairs, queues them (waiting while REPAIRS_QUEUED
    wait) for `workers` tasks that copy each through the runner `runner()` gives. Used as an
    async context manager: leaving it waits for the queued repairs (those not started once
    `stop` is set are left for the next scan)."""

    def __init__(
        self,
        journal: RowsByTag,
        runner: Callable[[], JobRunner | None],
        *,
        workers: int,
        stop: asyncio.Event | None = None,
    ) -> None:
        self._journal = journal
        self._runner = runner
        self._workers = workers
        self._stop = stop or asyncio.Event()
        self._queue: asyncio.Queue[JobRow | None] = asyncio.Queue(maxsize=REPAIRS_QUEUED)
        self._group: asyncio.TaskGroup | None = None
        self._entered = task_group()
        self.tally = RepairTally()

    async def __aenter__(self) -> RepairStream:
        self._group = await self._entered.__aenter__()
        for _ in range(self._workers):
            self._group.create_task(self._work())
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> bool | None:
        if kind is None:  # else the task group cancels the workers
            for _ in range(self._workers):
                await self._queue.put(None)
        return await self._entered.__aexit__(kind, error, trace)

    async def __call__(self, source: Site, repository: str, plans: Sequence[TagPlan]) -> None:
        """Queue the repairs among `plans` (a page of one repository's)."""
        keys = {p.key: None for p in plans if p.action is TagAction.REPAIR}
        if not keys:
            return
        tags = sorted({key.tag for key in keys if key.tag})
        digests = sorted({key.digest for key in keys if not key.tag})
        # The plan was made from this row's state (COMPLETE or SUPERSEDED, both final).
        for row in await self._journal.tag_jobs(source.name, repository, tags, digests):
            if row.key in keys and not self._stop.is_set():
                await self._queue.put(row)

    async def _work(self) -> None:
        while (row := await self._queue.get()) is not None:
            if self._stop.is_set():
                continue  # stopped: the rest is left for the next scan
            runner = self._runner()
            if runner is not None:
                self.tally.add(await _one(row, runner))


async def _one(row: JobRow, runner: JobRunner) -> RepairResult:
    try:
        result = await runner.run_outside(row)
    except ReplicatorError as exc:
        log.warning("repair_failed", job=row.id, code=exc.code, error=str(exc))
        return RepairResult(row.key, None, f"{exc.code}: {exc}")
    log.info("repaired", job=row.id, key=str(row.key), bytes=result.stats.bytes_copied)
    return RepairResult(row.key, result.stats)
