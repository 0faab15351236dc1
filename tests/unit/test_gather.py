"""gather_all and BlobLocations: the copier's small concurrency and memory pieces."""

from __future__ import annotations

import asyncio

import pytest

from replicator.engine.blob_locations import BlobLocations
from replicator.engine.gather import gather_all
from replicator.errors import NotFoundError


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
