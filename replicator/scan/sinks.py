"""Where a scan's plans go (scan/scanning.py's PlanSink): into the journal as jobs (Journaller,
repairs handed on to scan/repair.py's stream), or, in a dry run, to the caller as found
(PlanStream)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from replicator.domain.jobs import JobKey
from replicator.domain.routing import Site
from replicator.domain.routing.scan import TagAction, TagPlan
from replicator.scan.scanning import PlanSink, ScanJournal

Journalled = Callable[[Sequence[JobKey]], Awaitable[None]]


class Journaller:
    """The sink of a real (not dry) run: journals copies, denials and the delete jobs of a lost
    delete event (domain.routing.scan.replay_delete; then tells `journalled` the copies' and
    denials' keys: a backfill follows its jobs to their end), hands repairs on to `repairs`."""

    def __init__(
        self,
        journal: ScanJournal,
        *,
        wake: Callable[[], None] | None = None,
        repairs: PlanSink | None = None,
        journalled: Journalled | None = None,
    ) -> None:
        self._journal = journal
        self._wake = wake
        self._repairs = repairs
        self._journalled = journalled
        self.journalled = 0

    async def __call__(self, source: Site, repository: str, plans: Sequence[TagPlan]) -> None:
        copies = [p.key for p in plans if p.action is TagAction.COPY]
        denied = {p.key: p.reason for p in plans if p.action is TagAction.DENIED}
        # A held copy back may carry the delete jobs of its origin's lost delete event.
        deletes = [key for p in plans for key in p.deletes]
        if copies or denied or deletes:
            self.journalled += await self._journal.add_jobs([*copies, *deletes], denied=denied)
            if (copies or deletes) and self._wake is not None:
                self._wake()
        if self._repairs is not None:
            await self._repairs(source, repository, plans)
        if self._journalled is not None and (copies or denied):
            await self._journalled([*copies, *denied])


class PlanStream:
    """The sink of a dry run: hands on every plan that is not up to date as it is found, and
    counts them by action (a dry run over a million tags holds none of them)."""

    def __init__(self, on_plan: Callable[[TagPlan], None], planned: dict[TagAction, int]) -> None:
        self._on_plan = on_plan
        self._planned = planned

    async def __call__(self, source: Site, repository: str, plans: Sequence[TagPlan]) -> None:
        for plan in plans:
            if plan.action is not TagAction.UP_TO_DATE:
                self._planned[plan.action] = self._planned.get(plan.action, 0) + 1
                self._on_plan(plan)
