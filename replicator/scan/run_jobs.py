"""The jobs of one backfill run, followed to their end through the journal a window at a time.

The journal is the record of a run's jobs. The run remembers only the keys of those it has not
yet seen end — at most `OPEN_JOBS_WINDOW`: past that, the scan waits for ends before it journals
more (scan/backfill_run.py) — and folds each ended job into totals per destination, keeping a
bounded number of rows for its summary, those that need a look (failed, denied, unfinished)
before the complete ones. What a run holds is then flat in its number of jobs: a backfill that
journalled a job for every tag of a million kept a key, and at the end a row, of each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from replicator.domain.jobs import TERMINAL_STATES, FailureCode, JobKey, JobState

if TYPE_CHECKING:
    from replicator.journal.models import JobRow

# Jobs of a run journalled and not yet seen to end, at most (plus the page being journalled):
# then the scan waits for ends. Two pages of 1,000 tags keep the runner's places (`[workers]
# concurrency`, 16 by default) busy while the scan reads on, and are a MiB or two of keys.
OPEN_JOBS_WINDOW = 2_000
# Rows a run keeps for its summary (each one listed there), those that need a look first; the
# others are only counted (the journal holds them all: `replicator status`).
REPORTED_ROWS = 1_000
# Keys asked of the journal in one query: a page of tags (within every database's limit on a
# statement's parameters, SQLite's 32,766 the lowest).
KEYS_PER_QUERY = 1_000


class RowsByTag(Protocol):
    """What a run reads of the journal: the rows of a page of tags (Journal.tag_jobs)."""

    async def tag_jobs(
        self,
        source: str | None,
        repository: str,
        tags: Sequence[str],
        digests: Sequence[str] = (),
    ) -> list[JobRow]: ...


@dataclass(slots=True)
class DestinationTotals:
    """A run's jobs at one destination, by how they ended."""

    complete: int = 0  # COMPLETE, or SUPERSEDED (the source moved on: nothing left to copy)
    failed: int = 0
    denied: int = 0  # FAILED with POLICY_DENIED: reported, not a failure
    unfinished: int = 0  # still queued when the run stopped
    bytes: int = 0


def is_denied(row: JobRow) -> bool:
    """Whether the destination's policy refused the job."""
    return row.failure_code == FailureCode.POLICY_DENIED


@dataclass(slots=True)
class JobTotals:
    """A run's ended jobs: totals per destination, and at most `reported` of their rows, those
    not complete first (a complete row kept gives its place to one that needs a look)."""

    reported: int = REPORTED_ROWS
    destinations: dict[str, DestinationTotals] = field(default_factory=dict)
    jobs: int = 0
    unlisted: int = 0  # rows counted but not kept
    _notable: list[JobRow] = field(default_factory=list)
    _complete: list[JobRow] = field(default_factory=list)

    @property
    def rows(self) -> list[JobRow]:
        """The rows kept: failed, denied and unfinished ones, then complete ones."""
        return [*self._notable, *self._complete]

    @property
    def failed(self) -> int:
        """Jobs that failed for another reason than a policy denial."""
        return sum(line.failed for line in self.destinations.values())

    @property
    def denied(self) -> int:
        """Jobs the destinations' policies refused."""
        return sum(line.denied for line in self.destinations.values())

    def add(self, row: JobRow) -> None:
        """Count a job as `row` has it (ended, or unfinished when the run stopped)."""
        line = self.destinations.setdefault(row.destination, DestinationTotals())
        self.jobs += 1
        complete = row.state in (JobState.COMPLETE, JobState.SUPERSEDED)
        if is_denied(row):
            line.denied += 1
        elif complete:
            line.complete += 1
            line.bytes += row.bytes_copied
        elif row.state is JobState.FAILED:
            line.failed += 1
        else:
            line.unfinished += 1
        self._keep(row, complete=complete)

    def _keep(self, row: JobRow, *, complete: bool) -> None:
        if len(self._notable) + len(self._complete) < self.reported:
            (self._complete if complete else self._notable).append(row)
        elif not complete and self._complete:
            self._complete.pop()
            self._notable.append(row)
            self.unlisted += 1
        else:
            self.unlisted += 1


class RunJobs:
    """The keys of a run's jobs not yet seen to end, and the totals of those that did."""

    def __init__(self, journal: RowsByTag, *, window: int = OPEN_JOBS_WINDOW) -> None:
        self._journal = journal
        self.window = window
        # Open keys by (source, repository), as the journal is asked for them.
        self._open: dict[tuple[str, str], dict[JobKey, None]] = {}
        self.open = 0
        self.totals = JobTotals()
        # The scan's repositories (up to 16 at once) may all wait for ends at the same time:
        # one settles at a time, or two would count and forget the same keys.
        self._settling = asyncio.Lock()

    def add(self, keys: Sequence[JobKey]) -> None:
        """Follow `keys`, just journalled."""
        for key in keys:
            place = self._open.setdefault((key.source, key.repository), {})
            if key not in place:
                place[key] = None
                self.open += 1

    @property
    def full(self) -> bool:
        """Whether the run must see jobs end before it journals more."""
        return self.open > self.window

    async def settle(self) -> list[JobRow]:
        """Read the open jobs' rows: count those that ended (and forget their keys); the rows
        still open. A key the journal holds no row of is forgotten (a job of the same image
        from an event was on its way: the scan's key was not added)."""
        async with self._settling:
            return await self._settle()

    async def _settle(self) -> list[JobRow]:
        still: list[JobRow] = []
        for place, keys in list(self._open.items()):
            wanted = list(keys)
            for start in range(0, len(wanted), KEYS_PER_QUERY):
                chunk = dict.fromkeys(wanted[start : start + KEYS_PER_QUERY])
                rows = await self._rows(place, chunk)
                for key in chunk:
                    row = rows.get(key)
                    if row is not None and row.state not in TERMINAL_STATES:
                        still.append(row)
                        continue
                    if row is not None:
                        self.totals.add(row)
                    del keys[key]
                    self.open -= 1
            if not keys:
                del self._open[place]
        return still

    async def close(self) -> None:
        """Count every job followed as the journal has it now, the unfinished ones too (a run
        stopped has handed them back)."""
        for row in await self.settle():
            self.totals.add(row)
        self._open.clear()
        self.open = 0

    async def _rows(self, place: tuple[str, str], keys: dict[JobKey, None]) -> dict[JobKey, JobRow]:
        source, repository = place
        tags = sorted({key.tag for key in keys if key.tag})
        digests = sorted({key.digest for key in keys if not key.tag})
        rows = await self._journal.tag_jobs(source, repository, tags, digests)
        return {row.key: row for row in rows if row.key in keys}
