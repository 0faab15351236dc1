"""Repairs: images whose jobs the journal holds COMPLETE but which a destination lost since
(deleted by hand, storage lost). COMPLETE is final, so a scan cannot queue them again; it finds
them as repairs (domain.routing.scan.TagAction.REPAIR), copied again here through the job
runner (engine/runner.py `run_outside`): within `[workers] concurrency` and the destination's
`per_registry` slots, as the jobs it claims. The rows stay COMPLETE (true again once this
succeeds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from replicator.domain.jobs import JobKey, JobState
from replicator.domain.routing.scan import TagPlan
from replicator.engine.copier import CopyStats
from replicator.engine.gather import gather_all
from replicator.engine.runner import JobRunner
from replicator.errors import ReplicatorError
from replicator.logs import get_logger
from replicator.scan.sinks import journalled_rows

if TYPE_CHECKING:
    from replicator.journal.models import JobRow
    from replicator.journal.store import Journal

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RepairResult:
    """A repair of a COMPLETE job's image: what it copied, or why it failed."""

    key: JobKey
    stats: CopyStats | None
    error: str | None = None


async def repair(
    plans: Sequence[TagPlan], *, journal: Journal, runner: JobRunner
) -> list[RepairResult]:
    """Copy again, through `runner`'s limits, the images of `plans` whose jobs are COMPLETE."""
    if not plans:
        return []
    by_repository: dict[tuple[str, str], list[JobKey]] = {}
    for plan in plans:
        by_repository.setdefault((plan.key.source, plan.key.repository), []).append(plan.key)
    rows = await journalled_rows(journal, by_repository)
    return await gather_all([_one(row, runner) for row in rows if row.state is JobState.COMPLETE])


async def _one(row: JobRow, runner: JobRunner) -> RepairResult:
    try:
        result = await runner.run_outside(row)
    except ReplicatorError as exc:
        log.warning("repair_failed", job=row.id, code=exc.code, error=str(exc))
        return RepairResult(row.key, None, f"{exc.code}: {exc}")
    log.info("repaired", job=row.id, key=str(row.key), bytes=result.stats.bytes_copied)
    return RepairResult(row.key, result.stats)
