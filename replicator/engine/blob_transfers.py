"""Placing blobs at a destination: each skipped, mounted from a repository known to hold it, or
streamed from the source (also when the registry refuses the mount: domain/transfers/mounts.py),
within the process's global transfer limit, and never twice at once for one destination (a second
job wanting the same blob waits for the first, then mounts or skips).

    transfers = BlobTransfers(reads=reads, locations=locations)
    await transfers.ensure(step, src, dst, stats)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial

from replicator.domain.images.manifests import Descriptor
from replicator.domain.transfers.mounts import MountRefused, after_refused_mount
from replicator.domain.transfers.pace import Floor
from replicator.domain.transfers.plan import BlobAction, BlobStep
from replicator.engine.blob_locations import BlobLocations
from replicator.engine.copy_stats import CopyStats
from replicator.engine.endpoint import Endpoint
from replicator.engine.paced_reads import PaceObserver, SlowSources, paced, paced_opener
from replicator.engine.source_reads import SHARED_BLOB_MAX, SourceReads
from replicator.errors import AuthError, RegistryError
from replicator.logs import get_logger
from replicator.registry import blob_reads, blob_uploads, blobs
from replicator.registry.blobs import DEFAULT_CONCURRENCY
from replicator.registry.client import RegistryClient, push_scope
from replicator.registry.retry import whole

log = get_logger(__name__)

BlobObserver = Callable[[str, int], None]  # (action, bytes): for metrics


class BlobTransfers:
    """Places blobs for every copy of a process; safe to share between concurrent tasks."""

    def __init__(
        self,
        *,
        reads: SourceReads,
        locations: BlobLocations,
        concurrency: int = DEFAULT_CONCURRENCY,
        chunk_threshold: int = blobs.DEFAULT_CHUNK_THRESHOLD,
        on_blob: BlobObserver | None = None,
        floor: Floor | None = None,
        on_pace: PaceObserver | None = None,
    ) -> None:
        self._transfers = asyncio.Semaphore(concurrency)
        # A source read below the floor rate is cut and retried (paced_reads.py).
        self.floor = floor or Floor()
        self.slow_sources = SlowSources(on_pace)
        self._chunk_threshold = chunk_threshold
        self._inflight: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._locations = locations
        self._reads = reads
        self._on_blob = on_blob
        self._upload_modes = blob_uploads.UploadModes()

    async def ensure(self, step: BlobStep, src: Endpoint, dst: Endpoint, stats: CopyStats) -> None:
        """Place `step`'s blob at `dst`: skip it, mount it, or stream it from `src`."""
        digest = step.descriptor.digest
        if step.action is BlobAction.SKIP:
            stats.blobs_skipped += 1
            self._observe("skipped", 0)
            return
        key = (dst.client.host, digest)
        # In-flight de-duplication: a second job wanting the same blob at the same destination
        # waits for the first transfer, then mounts (other repository) or skips (same one).
        while (pending := self._inflight.get(key)) is not None:
            await asyncio.wait([pending])
        holder = self._locations.holder(*key)
        if self._locations.holds(*key, dst.repository):
            # Placed here by another job meanwhile. Never mount or upload it again: the
            # filesystem driver of distribution rewrites the repository's link file in place
            # (truncate, then write), and a manifest PUT verifying it at that moment is refused
            # MANIFEST_BLOB_UNKNOWN.
            stats.blobs_skipped += 1
            self._observe("skipped", 0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            # A repository known to hold it now beats the plan's guess.
            guessed = holder is None
            mount_from = holder or step.mount_from
            # The one retry outside the registry clients, and why: a transfer spans two
            # registries (the source's GET; the destination's mount, POST and PUT) and only
            # makes sense whole, so it is restarted whole under the destination's policy, its
            # requests tried once each within; a large blob's upload goes on from what the
            # registry holds (registry/blob_uploads.py), its download from the bytes received
            # (registry/blob_reads.py).
            await whole(
                dst.client.settings.retry,
                partial(self._transfer, step, src, dst, mount_from, stats, guessed=guessed),
            )
            self._locations.remember(dst.client.host, digest, dst.repository)
        finally:
            del self._inflight[key]
            future.set_result(None)

    async def _transfer(
        self,
        step: BlobStep,
        src: Endpoint,
        dst: Endpoint,
        mount_from: str | None,
        stats: CopyStats,
        *,
        guessed: bool,
    ) -> None:
        descriptor = step.descriptor
        location: str | None = None
        if guessed and not self._locations.guessing(dst.client.host):
            mount_from = None  # the registry refused a guess since the plan was made
        if mount_from is not None:
            result = await self._mount(dst, descriptor.digest, mount_from, guessed=guessed)
            if result is not None and result.mounted:
                stats.blobs_mounted += 1
                self._observe("mounted", 0)
                return
            # The registry opened an upload instead (it could not mount): use it. After a
            # refusal (None) a plain upload follows.
            location = result.location if result is not None else None
        async with self._transfers:
            # The upload session is opened before the transfer slots are taken, as a small
            # request: a slot then carries only the body's PUT, not also the POST's round trip.
            location = location or await blobs.start_upload(dst.client, dst.repository)
            session = _Session(location)
            try:
                async with _slots(src.client, dst.client):
                    await self._upload(src, dst, descriptor, session)
            except BaseException:
                # upload() ends its session when it fails (or leaves it open, kept in the
                # journal, for the next attempt); this ends it when the source read failed
                # before upload() began (a second DELETE is answered 404, accepted).
                if not session.left_open:
                    await blobs.cancel_upload(dst.client, location, push_scope(dst.repository))
                raise
        stats.blobs_copied += 1
        stats.bytes_copied += descriptor.size
        self._observe("copied", descriptor.size)

    async def _mount(
        self, dst: Endpoint, digest: str, mount_from: str, *, guessed: bool
    ) -> blobs.MountResult | None:
        """Try the mount; None when the registry refused it in a way that only means "upload it"
        (domain/transfers/mounts.py), after remembering what the refusal taught about the
        registry."""
        asked = self._locations.mark()
        try:
            result = await blobs.mount(dst.client, dst.repository, digest, mount_from)
        except RegistryError as exc:
            verdict = after_refused_mount(
                auth=isinstance(exc, AuthError), temporary=exc.temporary, guessed=guessed
            )
            if verdict is MountRefused.RAISE:
                raise
            log.info(
                "mount_refused",
                host=dst.client.host,
                repository=dst.repository,
                from_repository=mount_from,
                digest=digest,
                status=exc.status,
                guessed=guessed,
                error=str(exc),
            )
            if verdict is MountRefused.UPLOAD_STOP_GUESSING:
                self._locations.stop_guessing(dst.client.host)
            else:
                self._locations.contradicted(dst.client.host, digest, mount_from, asked_at=asked)
            return None
        if not result.mounted:
            # Refused: `mount_from` may not hold it after all (a wiped registry), or the token
            # may not reach it; either way it is no longer the place to mount this blob from.
            self._locations.contradicted(dst.client.host, digest, mount_from, asked_at=asked)
        return result

    async def _upload(
        self, src: Endpoint, dst: Endpoint, descriptor: Descriptor, session: _Session
    ) -> None:
        """Stream the blob into the upload session at `location`: resumable PATCHes when the
        source can be read from any offset (a blob above the shared-read size) and the
        destination has not shown it cannot resume, else today's whole-blob upload."""
        digest, size = descriptor.digest, descriptor.size
        if size > SHARED_BLOB_MAX and self._upload_modes.resumable(dst.client.host):
            kept = dst.uploads
            try:
                await blob_uploads.upload(
                    dst.client,
                    dst.repository,
                    digest,
                    size,
                    paced_opener(
                        lambda offset: blob_reads.open_blob(
                            src.client, src.repository, digest, size, start=offset
                        ),
                        self.floor,
                        host=src.client.host,
                        sources=self.slow_sources,
                    ),
                    location=session.location,
                    modes=self._upload_modes,
                    kept=await kept.find(dst.repository, digest) if kept else None,
                    on_progress=partial(kept.keep, dst.repository, digest) if kept else None,
                )
            except BaseException as exc:
                if kept is not None and blob_uploads.keeps_session(exc):
                    session.left_open = True  # kept for the next attempt to go on with
                elif kept is not None:
                    await kept.forget(dst.repository, digest)
                raise
            if kept is not None:
                await kept.forget(dst.repository, digest)
            return
        async with self._reads.blob(src.client, src.repository, digest, size) as body:
            await blobs.upload(
                dst.client,
                dst.repository,
                digest,
                size,
                paced(body, self.floor, host=src.client.host, sources=self.slow_sources),
                location=session.location,
                chunk_threshold=self._chunk_threshold,
            )

    # -- helpers ------------------------------------------------------------------------------

    def _observe(self, action: str, size: int) -> None:
        if self._on_blob is not None:
            self._on_blob(action, size)


@asynccontextmanager
async def _slots(*clients: RegistryClient) -> AsyncIterator[None]:
    """Hold a request slot on each registry, taken in host order so two opposite transfers
    (A->B and B->A) can never each hold one slot and wait for the other's."""
    async with AsyncExitStack() as stack:
        for client in sorted({c.host: c for c in clients}.values(), key=lambda c: c.host):
            await stack.enter_async_context(client.slot())
        yield


@dataclass(slots=True)
class _Session:
    """The upload session a transfer opened; `left_open` once its upload failed in a way that
    keeps it (in the journal) for the next attempt instead of ending it."""

    location: str
    left_open: bool = False
