"""The daemon's retention loop: events and finished jobs older than `[journal] retention_days`
are deleted in small batches, once at start and then every PRUNE_INTERVAL_SECONDS."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta

from replicator.engine.pauses import sleep_until
from replicator.errors import JournalError
from replicator.journal.retention import Pruned
from replicator.journal.store import Journal
from replicator.logs import get_logger

log = get_logger(__name__)

# Rows of each table one transaction deletes: a few milliseconds of the journal's one writer,
# so a message or a claim waits at most that long behind a pruning batch.
PRUNE_BATCH_ROWS = 500
# Between two batches the journal is left to intake and the workers for this long.
PRUNE_PAUSE_SECONDS = 0.05
# How often the journal is pruned: an hour's worth of rows is small against the retention.
PRUNE_INTERVAL_SECONDS = 3600.0
_SECONDS_PER_DAY = 86_400


async def prune_once(
    journal: Journal,
    retention_days: float,
    now: datetime,
    returning: Collection[tuple[str, str]] = (),
) -> Pruned:
    """Delete everything older than the retention, batch after batch (the jobs walked once, by
    id; on the `returning` routes, active-active, the newest job of each tag is kept however
    old); what was deleted. Nothing when `retention_days` is 0 (keep for ever)."""
    total = Pruned(0, 0)
    if retention_days <= 0:
        return total
    before = now - timedelta(seconds=retention_days * _SECONDS_PER_DAY)
    cursor = 0
    while True:
        batch = await journal.prune(before, PRUNE_BATCH_ROWS, after_job=cursor, returning=returning)
        total += batch
        cursor = batch.job_cursor
        done = (batch.events, batch.jobs_examined, batch.writes, batch.uploads)
        if max(done) < PRUNE_BATCH_ROWS:
            break
        await asyncio.sleep(PRUNE_PAUSE_SECONDS)
    if total.events or total.jobs or total.writes or total.uploads:
        log.info(
            "journal_pruned",
            events=total.events,
            jobs=total.jobs,
            writes=total.writes,
            uploads=total.uploads,
            before=before.isoformat(),
        )
    return total


async def prune_forever(
    journal: Journal,
    retention_days: Callable[[], float],
    stop: asyncio.Event,
    *,
    leading: Callable[[], bool] = lambda: True,
    returning: Callable[[], Collection[tuple[str, str]]] = frozenset,
) -> None:
    """Prune at once, then every PRUNE_INTERVAL_SECONDS until `stop`; the retention is read
    each time, so a reload applies. A journal error is logged and tried at the next pass. A
    pass is skipped while `leading` says another member of the fleet does the pruning."""
    while not stop.is_set():
        try:
            if leading():
                await prune_once(journal, retention_days(), datetime.now(UTC), returning())
        except JournalError as exc:
            log.warning("journal_prune_failed", error=str(exc))
        await sleep_until(PRUNE_INTERVAL_SECONDS, stop)
