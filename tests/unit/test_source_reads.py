"""Shared: reads joined while in flight, kept within a budget, never kept when they failed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from replicator.engine.source_reads import Broadcast, Shared

KEY = ("registry:5000", "prod/app", "sha256:" + "a" * 64)
OTHER = ("registry:5000", "prod/app", "sha256:" + "b" * 64)


class Reader:
    """A read that counts its calls and finishes when released."""

    def __init__(self, value: str = "bytes", *, fail: bool = False) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.value = value
        self.fail = fail

    async def __call__(self) -> str:
        self.calls += 1
        await self.release.wait()
        if self.fail:
            raise OSError("source went away")
        return self.value


class TestShared:
    async def test_concurrent_reads_are_joined(self) -> None:
        """Three copies asking at once cause one read and all get its result."""
        shared: Shared[str] = Shared(max_entries=8, budget=100)
        reader = Reader()
        waiters = [asyncio.create_task(shared.read(KEY, 10, reader)) for _ in range(3)]
        await asyncio.sleep(0)
        reader.release.set()
        assert await asyncio.gather(*waiters) == ["bytes"] * 3
        assert reader.calls == 1

    async def test_finished_read_is_kept(self) -> None:
        """A copy starting after the read finished gets the kept result without a read."""
        shared: Shared[str] = Shared(max_entries=8, budget=100)
        reader = Reader()
        reader.release.set()
        assert await shared.read(KEY, 10, reader) == "bytes"
        assert await shared.read(KEY, 10, reader) == "bytes"
        assert reader.calls == 1

    async def test_not_kept_when_keep_is_off(self) -> None:
        """With keep off (a tag), a finished answer is not reused: the next ask reads again."""
        shared: Shared[str] = Shared(max_entries=8, budget=0, keep=False)
        reader = Reader()
        reader.release.set()
        await shared.read(KEY, 0, reader)
        await asyncio.sleep(0)  # the done callback runs
        await shared.read(KEY, 0, reader)
        assert reader.calls == 2

    async def test_failed_read_is_not_kept(self) -> None:
        """Every joined copy sees the failure, and the next attempt reads afresh."""
        shared: Shared[str] = Shared(max_entries=8, budget=100)
        failing = Reader(fail=True)
        waiters = [asyncio.create_task(shared.read(KEY, 10, failing)) for _ in range(2)]
        await asyncio.sleep(0)
        failing.release.set()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(r, OSError) for r in results)
        await asyncio.sleep(0)
        healthy = Reader("fresh")
        healthy.release.set()
        assert await shared.read(KEY, 10, healthy) == "fresh"

    async def test_over_budget_reads_alone(self) -> None:
        """A read that does not fit beside what is in flight is not shared: each copy reads."""
        shared: Shared[str] = Shared(max_entries=8, budget=15)
        first = Reader()
        holder = asyncio.create_task(shared.read(KEY, 10, first))
        await asyncio.sleep(0)
        alone = Reader()
        alone.release.set()
        assert await shared.read(OTHER, 10, alone) == "bytes"
        assert await shared.read(OTHER, 10, alone) == "bytes"
        assert alone.calls == 2
        first.release.set()
        await holder

    @pytest.mark.parametrize("max_entries", [1, 2], ids=["one-entry", "two-entries"])
    async def test_finished_entries_make_room(self, max_entries: int) -> None:
        """Kept reads are evicted, oldest first, when a new read needs their room."""
        shared: Shared[str] = Shared(max_entries=max_entries, budget=10)
        reader = Reader()
        reader.release.set()
        await shared.read(KEY, 10, reader)
        await shared.read(OTHER, 10, reader)  # evicts KEY: both would exceed the budget
        await shared.read(KEY, 10, reader)
        assert reader.calls == 3


async def drain(reader: AsyncIterator[bytes]) -> list[bytes]:
    """Every chunk of a reader."""
    return [chunk async for chunk in reader]


class TestBroadcast:
    async def test_early_and_late_readers_get_every_chunk(self) -> None:
        """A reader from the start streams chunks as they come; one joining later replays them
        from the first; both end when the read does."""
        broadcast = Broadcast()
        early = asyncio.create_task(drain(broadcast.reader()))
        broadcast.add(b"one")
        await asyncio.sleep(0)
        late = asyncio.create_task(drain(broadcast.reader()))
        broadcast.add(b"two")
        await asyncio.sleep(0)
        assert not early.done()
        broadcast.finish()
        assert await early == await late == [b"one", b"two"]

    async def test_failure_reaches_every_reader(self) -> None:
        """When the read fails, readers get the chunks so far, then its error."""
        broadcast = Broadcast()
        reader = broadcast.reader()
        broadcast.add(b"partial")
        assert await anext(reader) == b"partial"
        broadcast.fail(OSError("reset"))
        with pytest.raises(OSError, match="reset"):
            await anext(reader)
