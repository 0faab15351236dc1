"""gather_all, map_bounded and BlobLocations: the copier's and the scan's small concurrency and
memory pieces."""

from __future__ import annotations

import asyncio

import pytest

from replicator.engine.blob_locations import BlobLocations
from replicator.engine.gather import gather_all, map_bounded
from replicator.errors import NotFoundError


class TestMapBounded:
    """map_bounded works through items a bounded number at a time, results in order."""

    async def test_results_in_order_and_at_most_in_flight(self) -> None:
        """Every item's result comes back in the items' order, and no more than `in_flight`
        items are worked on at once."""
        running, most = 0, 0

        async def work(item: int) -> int:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.001 * (item % 3))
            running -= 1
            return item * 2

        assert await map_bounded(work, list(range(50)), 4) == [i * 2 for i in range(50)]
        assert most == 4

    async def test_no_items(self) -> None:
        """No items, no work, an empty list."""

        async def work(item: int) -> int:
            raise AssertionError(item)

        assert await map_bounded(work, [], 8) == []

    async def test_first_error_is_raised_and_the_rest_not_started(self) -> None:
        """The first failure is raised as itself; items after it are not worked on."""
        started: list[int] = []

        async def work(item: int) -> int:
            started.append(item)
            await asyncio.sleep(0)
            if item == 1:
                raise NotFoundError("gone", status=404)
            await asyncio.sleep(0.05)
            return item

        with pytest.raises(NotFoundError, match="gone"):
            await map_bounded(work, list(range(10)), 2)
        assert len(started) <= 3, started


class TestGatherAll:
    """gather_all runs awaitables together and fails fast with the original error."""

    async def test_results_in_order(self) -> None:
        """Results come back in the order of the awaitables, whatever order they finish in."""

        async def after(delay: float, value: int) -> int:
            await asyncio.sleep(delay)
            return value

        assert await gather_all([after(0.02, 1), after(0.0, 2), after(0.01, 3)]) == [1, 2, 3]

    async def test_first_error_is_raised_unwrapped_and_others_cancelled(self) -> None:
        """The failing awaitable's own error is raised (no ExceptionGroup) and the rest stop."""
        cancelled = asyncio.Event()

        async def slow() -> None:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        async def failing() -> None:
            raise NotFoundError("gone", status=404)

        with pytest.raises(NotFoundError, match="gone"):
            await gather_all([slow(), failing()])
        assert cancelled.is_set()

    async def test_empty(self) -> None:
        """No awaitables give an empty list."""
        assert await gather_all([]) == []


class TestBlobLocations:
    """The per-process memory of which destination repository holds a blob."""

    def test_remember_and_holder(self) -> None:
        """A remembered blob names its repository, per destination host."""
        places = BlobLocations()
        places.remember("dst:5000", "sha256:a", "team/app")
        assert places.holder("dst:5000", "sha256:a") == "team/app"
        assert places.holder("other:5000", "sha256:a") is None

    def test_cap_forgets_the_oldest(self) -> None:
        """Beyond the cap the least recently remembered blob is forgotten, memory stays bounded."""
        places = BlobLocations(cap=2)
        places.remember("h", "sha256:1", "r")
        places.remember("h", "sha256:2", "r")
        places.remember("h", "sha256:1", "r")  # refreshed: now the newest
        places.remember("h", "sha256:3", "r")
        assert places.holder("h", "sha256:2") is None
        assert places.holder("h", "sha256:1") == "r"
        assert places.holder("h", "sha256:3") == "r"


class TestBlobLocationsHolds:
    """holds() tells whether a repository already has a blob, for every repository seen."""

    def test_every_repository_seen_is_remembered(self) -> None:
        """A blob placed in several repositories is known in each, not only the latest."""
        places = BlobLocations()
        for repository in ("team/a", "team/b", "team/c"):
            places.remember("h", "sha256:x", repository)
        assert all(places.holds("h", "sha256:x", r) for r in ("team/a", "team/b", "team/c"))
        assert not places.holds("h", "sha256:x", "team/d")
        assert places.holder("h", "sha256:x") == "team/c"


class TestBlobLocationsContradicted:
    """Memory is a hint: an answer of the destination that contradicts it wins."""

    @pytest.mark.parametrize(
        ("remembered_before_asking", "forgotten"),
        [(True, True), (False, False)],
        ids=["believed-then-said-absent", "placed-after-the-question"],
    )
    def test_contradiction_forgets_only_what_was_believed_before_asking(
        self, remembered_before_asking: bool, forgotten: bool
    ) -> None:
        """A HEAD saying absent forgets a holder remembered before the HEAD was sent, never
        one remembered after (another job placed the blob meanwhile)."""
        places = BlobLocations()
        if remembered_before_asking:
            places.remember("h", "sha256:x", "team/a")
        asked = places.mark()
        if not remembered_before_asking:
            places.remember("h", "sha256:x", "team/a")
        assert places.contradicted("h", "sha256:x", "team/a", asked_at=asked) is forgotten
        assert places.holds("h", "sha256:x", "team/a") is not forgotten

    def test_contradiction_keeps_other_holders(self) -> None:
        """Forgetting one repository's copy keeps the other repositories known to hold it."""
        places = BlobLocations()
        places.remember("h", "sha256:x", "team/a")
        places.remember("h", "sha256:x", "team/b")
        assert places.contradicted("h", "sha256:x", "team/b", asked_at=places.mark())
        assert places.holder("h", "sha256:x") == "team/a"
        assert not places.contradicted("h", "sha256:y", "team/b", asked_at=places.mark())

    def test_forget_destination_drops_that_host_only(self) -> None:
        """Forgetting a destination drops every blob believed there, and no other host's."""
        places = BlobLocations()
        places.remember("wiped", "sha256:x", "team/a")
        places.remember("wiped", "sha256:y", "team/b")
        places.remember("other", "sha256:x", "team/a")
        assert places.forget_destination("wiped") == 2
        assert places.holder("wiped", "sha256:x") is None
        assert places.holder("wiped", "sha256:y") is None
        assert places.holder("other", "sha256:x") == "team/a"
