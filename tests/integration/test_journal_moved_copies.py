"""The journal's moved copies on SQLite and PostgreSQL: the COMPLETE copies whose tag the daemon
later set to another digest on the same route (what a reconcile checks for untagged replicas
whose delete event was lost, scan/lost_deletes.py), paged by id."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from replicator.domain.jobs import JobKey
from replicator.domain.jobs.ends import Completed, CopyCounters
from replicator.journal import Journal

pytestmark = pytest.mark.integration

X, Y, Z = ("sha256:" + c * 64 for c in "xyz")
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


async def copied(journal: Journal, key: JobKey, minute: int) -> None:
    """Journal `key` and finish it COMPLETE at T0 + `minute` minutes."""
    await journal.add_jobs([key])
    (claimed,) = await journal.claim_due(1, T0)
    assert claimed.key == key
    done = Completed(CopyCounters(bytes_copied=1, blobs_copied=1))
    await journal.end(claimed.id, done, now=T0 + timedelta(minutes=minute))


async def test_copies_whose_tag_moved_later_are_found_a_page_at_a_time(journal: Journal) -> None:
    """b -> a: v1 = X then v1 = Y (X's copy moved), v2 = Z then v2 = X (Z's moved); v3 = Y
    alone, another route's copy and another repository's are not; pages of one follow ids."""
    b_to_a = JobKey("b", "app", X, "v1", "a", origin="e1")
    await copied(journal, b_to_a, 1)
    await copied(journal, replace(b_to_a, digest=Y, origin="e2"), 2)
    await copied(journal, replace(b_to_a, tag="v2", digest=Z, origin="e3"), 3)
    await copied(journal, replace(b_to_a, tag="v2", origin="e4"), 4)
    await copied(journal, replace(b_to_a, tag="v3", digest=Y, origin="e5"), 5)
    await copied(journal, replace(b_to_a, destination="c", origin="e6"), 6)
    await copied(journal, replace(b_to_a, destination="c", digest=Y, origin="e7"), 7)
    await copied(journal, replace(b_to_a, repository="other", origin="e8"), 8)
    await copied(journal, replace(b_to_a, repository="other", digest=Y, origin="e9"), 9)

    found = await journal.moved_copies("b", "a", "app", after=0, limit=10)
    assert [(row.tag, row.digest) for row in found] == [("v1", X), ("v2", Z)]
    first = await journal.moved_copies("b", "a", "app", after=0, limit=1)
    rest = await journal.moved_copies("b", "a", "app", after=first[0].id, limit=1)
    assert [row.id for row in [*first, *rest]] == [row.id for row in found]
    assert await journal.moved_copies("a", "b", "app", after=0, limit=10) == []
