"""Reads of a source shared by the copies that need the same thing at once.

A push replicated to N destinations starts N jobs together, and each would read the same
manifest, HEAD the same tag and GET the same blobs from the source: N times the load on the
registry the push just landed on, for identical bytes. Here the first copy reads and the others
join its read:

- a tag HEAD is joined only while in flight (a tag moves; a finished answer is not reused);
- a manifest by digest and a small blob are immutable (content-addressed), so a finished read
  is also kept a short while, within a byte budget, for a copy that starts a little later.

Memory stays bounded: blobs above `max_blob` are never held (they stream, as before), and held
bytes never exceed `budget`; when a read does not fit, that copy streams on its own.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from replicator.domain.images.manifests import Manifest
from replicator.registry import blob_reads, blobs, manifests
from replicator.registry.client import RegistryClient
from replicator.registry.manifests import ManifestHead

T = TypeVar("T")
Key = tuple[str, str, str]  # registry host, repository, digest or tag

# Blobs up to this size are read once into memory and shared: configs and small layers, where
# a request costs more than the bytes. Larger blobs stream from the source per copy.
SHARED_BLOB_MAX = 8 * 1024 * 1024
# All shared blob bytes held at once (in flight and kept): bounds the daemon's extra memory.
SHARED_BLOB_BUDGET = 32 * 1024 * 1024
# How many shared blobs are tracked at once (the byte budget binds first for all but tiny blobs;
# this bounds the bookkeeping when thousands of config-sized blobs pass through).
SHARED_BLOBS = 1024
# Manifests up to this size are kept after their read (nearly all are a few KiB).
SHARED_MANIFEST_MAX = 64 * 1024
# How many finished manifest reads are kept.
SHARED_MANIFESTS = 256
# A finished read is reused this long: the jobs of one push start within milliseconds of each
# other; a minute also covers a backoff retry, and keeps nothing stale around for long.
KEEP_SECONDS = 60.0


@dataclass(slots=True)
class _Entry(Generic[T]):
    task: asyncio.Task[T]
    size: int
    started: float


class Shared(Generic[T]):
    """In-flight joining and, when `keep`, an expiring LRU of finished reads bounded by count
    and bytes."""

    def __init__(self, *, max_entries: int, budget: int, keep: bool = True) -> None:
        self._entries: OrderedDict[Key, _Entry[T]] = OrderedDict()
        self._max_entries = max_entries
        self._budget = budget
        self._keep = keep
        self._held = 0

    async def read(self, key: Key, size: int, read: Callable[[], Awaitable[T]]) -> T:
        """The shared result of `read` for `key`; read alone when it does not fit."""
        task = self.join(key) or self.start(key, size, read)
        if task is None:
            return await read()
        return await asyncio.shield(task)

    def join(self, key: Key) -> asyncio.Task[T] | None:
        """The read of `key` in flight or kept, if any."""
        self._expire()
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry.task

    def start(
        self, key: Key, size: int, read: Callable[[], Awaitable[T]]
    ) -> asyncio.Task[T] | None:
        """Start the shared read of `key`, or None when `size` bytes do not fit the budget."""
        self._make_room(size)
        if self._held + size > self._budget:
            return None
        task = asyncio.ensure_future(read())
        self._entries[key] = _Entry(task, size, time.monotonic())
        self._held += size
        task.add_done_callback(lambda done: self._finished(key, done))
        return task

    def forget(self, key: Key) -> None:
        """Stop sharing `key` (its read is not to be kept)."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._held -= entry.size

    def _finished(self, key: Key, task: asyncio.Task[T]) -> None:
        # A failed read is never kept: the next attempt reads afresh. Retrieving the exception
        # also keeps asyncio from warning about it when no copy awaited the task.
        if not self._keep or task.cancelled() or task.exception() is not None:
            entry = self._entries.get(key)
            if entry is not None and entry.task is task:
                self.forget(key)

    def _expire(self) -> None:
        limit = time.monotonic() - KEEP_SECONDS
        for key, entry in list(self._entries.items()):
            if entry.started < limit and entry.task.done():
                self.forget(key)

    def _make_room(self, size: int) -> None:
        self._expire()
        for key, entry in list(self._entries.items()):
            fits = self._held + size <= self._budget and len(self._entries) < self._max_entries
            if fits:
                return
            if entry.task.done():
                self.forget(key)


class SourceReads:
    """The shared reads of one process's copies (one per Copier)."""

    def __init__(
        self,
        *,
        blob_budget: int = SHARED_BLOB_BUDGET,
        max_blob: int = SHARED_BLOB_MAX,
        max_manifests: int = SHARED_MANIFESTS,
    ) -> None:
        self._max_blob = max_blob
        self._blobs: Shared[Broadcast] = Shared(max_entries=SHARED_BLOBS, budget=blob_budget)
        self._manifests: Shared[Manifest] = Shared(
            max_entries=max_manifests, budget=max_manifests * SHARED_MANIFEST_MAX
        )
        self._tags: Shared[ManifestHead | None] = Shared(
            max_entries=max_manifests, budget=0, keep=False
        )

    async def manifest(
        self, client: RegistryClient, repository: str, digest: str, *, size: int | None = None
    ) -> Manifest:
        """The manifest `digest` of the repository, read once for every copy wanting it (`size`,
        its descriptor's, caps the read: a digest has one size, so every honest reader agrees)."""
        key = (client.host, repository, digest)
        manifest = await self._manifests.read(
            key,
            SHARED_MANIFEST_MAX,
            lambda: manifests.get(client, repository, digest, size=size),
        )
        if len(manifest.raw) > SHARED_MANIFEST_MAX:
            self._manifests.forget(key)
        return manifest

    async def tag_head(
        self, client: RegistryClient, repository: str, tag: str
    ) -> ManifestHead | None:
        """HEAD of `tag`, joining a HEAD of it already in flight (never reusing a finished one:
        a tag moves)."""
        key = (client.host, repository, tag)
        return await self._tags.read(key, 0, lambda: manifests.head(client, repository, tag))

    @asynccontextmanager
    async def blob(
        self, client: RegistryClient, repository: str, digest: str, size: int
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """The verified bytes of a source blob, streamed: a small one from one shared read of
        the source (the first copy streams it as it arrives, later ones from what arrived), a
        large one (or one the budget cannot hold) from a read of its own. The last bytes come
        only once the digest is checked, in both cases."""
        key = (client.host, repository, digest)
        shared: asyncio.Task[Broadcast] | None = None
        if size <= self._max_blob:

            async def start() -> Broadcast:
                broadcast = Broadcast()
                broadcast.producer = asyncio.ensure_future(
                    self._produce(
                        broadcast, key, client, repository=repository, digest=digest, size=size
                    )
                )
                return broadcast

            shared = self._blobs.join(key) or self._blobs.start(key, size, start)
        if shared is None:
            async with blob_reads.open_blob(client, repository, digest, size) as body:
                yield blobs.verified(body, digest, size)
            return
        broadcast = await asyncio.shield(shared)
        yield broadcast.reader()

    async def _produce(
        self,
        broadcast: Broadcast,
        key: Key,
        client: RegistryClient,
        *,
        repository: str,
        digest: str,
        size: int,
    ) -> None:
        """Read the blob into `broadcast`; on failure it is shared no longer."""
        try:
            async with blob_reads.open_blob(client, repository, digest, size) as body:
                async for chunk in blobs.verified(body, digest, size):
                    broadcast.add(chunk)
        except BaseException as exc:
            self._blobs.forget(key)
            broadcast.fail(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            broadcast.finish()


class Broadcast:
    """The chunks of one source read, for every copy that reads along (each from the start)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.done = False
        self.error: BaseException | None = None
        self.producer: asyncio.Future[None] | None = None  # the read filling it (kept alive)
        self._changed = asyncio.Event()

    def add(self, chunk: bytes) -> None:
        """One more chunk, verified so far (the last one only once the digest matched)."""
        self.chunks.append(chunk)
        self._pulse()

    def finish(self) -> None:
        """The read ended with every byte."""
        self.done = True
        self._pulse()

    def fail(self, error: BaseException) -> None:
        """The read failed: readers raise `error` after the chunks they already had."""
        self.error = error
        self.done = True
        self._pulse()

    def _pulse(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def reader(self) -> AsyncIterator[bytes]:
        """Every chunk from the first, as the read delivers them."""
        index = 0
        while True:
            while index < len(self.chunks):
                yield self.chunks[index]
                index += 1
            if self.error is not None:
                raise self.error
            if self.done:
                return
            await self._changed.wait()
