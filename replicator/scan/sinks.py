"""Where a scan's plans go (scan/scanning.py's PlanSink): into the journal as jobs (Journaller,
repairs kept aside for scan/repair.py), or, in a dry run, to the caller as found (PlanStream)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from replicator.domain.jobs import JobKey
from replicator.domain.routing import Site
from replicator.domain.routing.scan import TagAction, TagPlan
from replicator.scan.scanning import ScanJournal

if TYPE_CHECKING:
    from replicator.journal.models import JobRow
    from replicator.journal.store import Journal


class Journaller:
    """The sink of a real (not dry) run: journals copies and denials, keeps repairs aside."""

    def __init__(
        self,
        journal: ScanJournal,
        *,
        wake: Callable[[], None] | None = None,
        keep_keys: bool = True,
    ) -> None:
        self._journal = journal
        self._wake = wake
        # A backfill waits for its jobs by their keys; a reconcile does not keep them (a
        # million missing tags would be a million keys held to no use).
        self._keep_keys = keep_keys
        self.keys: dict[tuple[str, str], list[JobKey]] = {}
        self.repairs: list[TagPlan] = []
        self.journalled = 0

    async def __call__(self, source: Site, repository: str, plans: Sequence[TagPlan]) -> None:
        copies = [p.key for p in plans if p.action is TagAction.COPY]
        denied = {p.key: p.reason for p in plans if p.action is TagAction.DENIED}
        self.repairs.extend(p for p in plans if p.action is TagAction.REPAIR)
        if not copies and not denied:
            return
        self.journalled += await self._journal.add_jobs(copies, denied=denied)
        if self._keep_keys:
            self.keys.setdefault((source.name, repository), []).extend([*copies, *denied])
        if copies and self._wake is not None:
            self._wake()


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


async def journalled_rows(
    journal: Journal, keys: Mapping[tuple[str, str], Sequence[JobKey]]
) -> list[JobRow]:
    """The journal's rows of `keys` (one query per repository)."""
    rows: list[JobRow] = []
    for (source, repository), wanted in keys.items():
        chosen = set(wanted)
        rows.extend(r for r in await journal.status(source, repository) if r.key in chosen)
    return rows
