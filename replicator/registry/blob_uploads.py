"""Blob uploads that survive a dropped link: a broken upload continues where the registry got to.

The blob goes up as PATCHes of `chunk_size` bytes (`Content-Range: START-END`) and one PUT with
the digest. When the link breaks, the registry is asked where it got to (GET of the upload URL:
`Range: 0-E`, as the distribution spec defines) and the PATCHes go on from E + 1. The bytes come
from the source, which can be read from any offset (`blob_reads`): after a break it is read again
from the last hash checkpoint at or below the registry's offset, so the digest is computed once
over the whole stream and memory stays one network chunk plus the checkpoints' hash states.

A registry that cannot say where it got to (distribution answers a status GET whose offset is not
the one it signed BLOB_UPLOAD_INVALID, and ends the session), that says it holds less than it
acknowledged, or that refuses a PATCH, is remembered (`UploadModes`) and gets whole-blob uploads
from then on, as before.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack

from replicator.domain.transfers.resumes import after_break, upload_offset
from replicator.errors import DigestMismatch, RegistryError, ReplicatorError, TransportError
from replicator.logs import get_logger
from replicator.registry.blobs import (
    DEFAULT_CHUNK_SIZE,
    cancel_upload,
    finish_upload,
    next_location,
    patch_chunk,
)
from replicator.registry.client import RegistryClient, push_scope
from replicator.registry.resumed import resumed

log = get_logger(__name__)

# Opens the source blob's bytes from an offset (unverified; hashed here).
SourceOpener = Callable[[int], AbstractAsyncContextManager[AsyncIterator[bytes]]]
# Told of the upload URL and the bytes the registry acknowledged, as they grow.
Progress = Callable[[str, int], Awaitable[None]]
# A hash state is kept every this many bytes: a resume reads the source again from the last one
# at or below the registry's offset, under 1 MiB it had already read. 1 MiB keeps a 10 GiB
# blob's checkpoints within one PATCH chunk to 32 states (about 4 KiB).
CHECKPOINT_BYTES = 1024 * 1024
# A PATCH whose Content-Range does not start where the registry stands is answered this.
RANGE_NOT_SATISFIABLE = 416


class UploadModes:
    """Which registries cannot resume a broken upload (learned once, kept for the process)."""

    def __init__(self) -> None:
        self._whole: set[str] = set()

    def resumable(self, host: str) -> bool:
        """Whether uploads to `host` go up in resumable PATCHes (until it shows it cannot)."""
        return host not in self._whole

    def whole_blobs(self, host: str, reason: str) -> None:
        """`host` cannot resume uploads: whole-blob uploads from now on."""
        if host not in self._whole:
            self._whole.add(host)
            log.warning("upload_resume_unsupported", destination=host, reason=reason)


class ResumeUnsupported(RegistryError):
    """The registry cannot continue this upload; the blob is uploaded again whole (temporary:
    the transfer's retry takes the whole-blob path, `UploadModes` having learned it)."""

    code = "TRANSPORT_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message, temporary=True)


class _Hash:
    """The digest's hash over the bytes taken so far, with states kept at checkpoints."""

    def __init__(self, digest: str) -> None:
        self.algorithm, _, self.expected = digest.partition(":")
        self._hasher = hashlib.new(self.algorithm)
        self.offset = 0
        self._checkpoints = {0: self._hasher.copy()}

    def update(self, data: bytes) -> None:
        while data:
            room = CHECKPOINT_BYTES - self.offset % CHECKPOINT_BYTES
            piece, data = data[:room], data[room:]
            self._hasher.update(piece)
            self.offset += len(piece)
            if self.offset % CHECKPOINT_BYTES == 0:
                self._checkpoints[self.offset] = self._hasher.copy()

    def rewind(self, offset: int) -> int:
        """Go back to the last checkpoint at or below `offset`; returns its offset."""
        at = max(point for point in self._checkpoints if point <= offset)
        self._hasher = self._checkpoints[at].copy()
        self.offset = at
        return at

    def forget_below(self, offset: int) -> None:
        """Drop the checkpoints a resume to `offset` or later can no longer need."""
        keep = max(point for point in self._checkpoints if point <= offset)
        for point in [point for point in self._checkpoints if point < keep]:
            del self._checkpoints[point]

    def check(self) -> None:
        """DigestMismatch unless the bytes taken hash to the expected digest."""
        if self._hasher.hexdigest() != self.expected:
            raise DigestMismatch(
                f"blob bytes hash to {self.algorithm}:{self._hasher.hexdigest()}, "
                f"not {self.algorithm}:{self.expected}"
            )


class _Source:
    """The source blob read forward, hashed as taken, and re-read from a checkpoint on demand."""

    def __init__(self, open_at: SourceOpener, digest: str, size: int) -> None:
        self._open_at = open_at
        self._digest = digest
        self._size = size
        self.hash = _Hash(digest)
        self._stack: AsyncExitStack | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._pending = b""
        self.furthest = 0  # the most bytes ever taken: none beyond it can have been sent

    @property
    def position(self) -> int:
        return self.hash.offset

    async def seek(self, offset: int) -> None:
        """Continue from `offset` (at most `furthest`): back to the last checkpoint at or
        below it, then read on to it."""
        if offset == self.position and self._chunks is not None:
            return
        start = self.hash.rewind(offset)
        await self.close()
        self._stack = AsyncExitStack()
        self._chunks = await self._stack.enter_async_context(self._open_at(start))
        self._pending = b""
        async for _ in self.take(offset - start):
            pass

    async def take(self, length: int) -> AsyncIterator[bytes]:
        """The next `length` bytes, hashed; DigestMismatch if the source ends before them."""
        assert self._chunks is not None, "seek() opens the source"
        remaining = length
        while remaining > 0:
            if not self._pending:
                try:
                    self._pending = await anext(self._chunks)
                except StopAsyncIteration:
                    raise DigestMismatch(
                        f"blob {self._digest}: the source ended at byte {self.position}, its "
                        f"descriptor says {self._size}"
                    ) from None
            piece, self._pending = self._pending[:remaining], self._pending[remaining:]
            remaining -= len(piece)
            self.hash.update(piece)
            self.furthest = max(self.furthest, self.position)
            yield piece

    async def close(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._chunks = self._stack, None, None
            await stack.aclose()


async def upload(
    client: RegistryClient,
    repository: str,
    digest: str,
    size: int,
    open_source: SourceOpener,
    *,
    location: str,
    modes: UploadModes,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    kept: tuple[str, int] | None = None,
    on_progress: Progress | None = None,
) -> None:
    """Upload blob `digest` of `size` bytes into the session at `location`, in PATCHes that
    resume after a break. `kept`: (URL, offset) of an upload of it left under way (by a
    process that died, or an attempt that failed), gone on with if the registry still has it;
    `on_progress` is told of the URL and the bytes acknowledged as they grow. On failure the
    session is ended, unless `on_progress` keeps it and the error is one to try again after
    (`keeps_session`): then it is left open for the next attempt to go on with."""
    scope = push_scope(repository)
    source = _Source(open_source, digest, size)
    start = 0
    if kept is not None:
        try:
            reopened = await _reopen(client, kept, scope=scope, size=size)
        except BaseException:
            await cancel_upload(client, location, scope)  # the fresh session, never used
            raise
        if reopened is not None:
            await cancel_upload(client, location, scope)  # the fresh session is not needed
            location, start = reopened
    try:
        if on_progress is not None:
            await on_progress(location, start)
        # From a kept offset the source is read (and hashed) from its start up to it: the
        # hash state died with the process (or attempt) that sent those bytes.
        await source.seek(start)
        location = await _send_all(
            client, source, location, scope=scope, size=size, modes=modes,
            chunk_size=chunk_size, start=start, on_progress=on_progress,
        )  # fmt: skip
        source.hash.check()
        await finish_upload(client, location, digest, scope=scope)
    except BaseException as exc:
        if on_progress is None or not keeps_session(exc):
            await cancel_upload(client, location, scope)
        raise
    finally:
        await source.close()


def keeps_session(exc: BaseException) -> bool:
    """Whether an upload that failed with `exc` leaves its session open for the next attempt
    (when the session is kept somewhere): a temporary error (the link down longer than the
    resumes wait in a transfer slot), other than the registry being unable to resume."""
    return (
        isinstance(exc, ReplicatorError)
        and exc.temporary
        and not isinstance(exc, ResumeUnsupported)
    )


async def _send_all(
    client: RegistryClient,
    source: _Source,
    location: str,
    *,
    scope: str,
    size: int,
    modes: UploadModes,
    chunk_size: int,
    start: int,
    on_progress: Progress | None,
) -> str:
    """PATCH every byte from `start`, resuming after breaks; returns the Location to commit
    at."""
    acknowledged = start  # bytes the registry said it holds
    resumed_at = start
    stalled = 0
    while acknowledged < size:
        length = min(chunk_size, size - acknowledged)
        try:
            location = await _patch(client, location, source, acknowledged, length, scope=scope)
        except RegistryError as exc:
            # A break, or 416: the registry holds other than we thought (what a request the
            # link broke delivered may land after we asked); both ask where it got to.
            if not isinstance(exc, TransportError) and exc.status != RANGE_NOT_SATISFIABLE:
                if exc.temporary or acknowledged:
                    raise
                modes.whole_blobs(client.host, f"PATCH answered {exc.status}")
                raise ResumeUnsupported(f"{client.host} refused a chunked upload: {exc}") from exc
            broke: RegistryError = exc
        else:
            acknowledged += length
            source.hash.forget_below(acknowledged)
            if on_progress is not None:
                await on_progress(location, acknowledged)
            continue
        status, stalled = await _where(client, location, scope=scope, stalled=stalled)
        # A registry holds at least what it acknowledged, and at most what was ever sent: the
        # bytes of an earlier broken request may land after it answered a status GET.
        if status is None or not acknowledged <= status[0] <= source.furthest:
            said = "no offset" if status is None else f"offset {status[0]}"
            modes.whole_blobs(client.host, f"upload status after a break: {said}")
            raise ResumeUnsupported(f"{client.host} cannot resume the upload: {broke}") from broke
        continue_at, location = status
        decision = after_break(offset=continue_at, resumed_at=resumed_at, stalled=stalled)
        if decision is None:
            raise broke
        stalled, resumed_at, acknowledged = decision.stalled, continue_at, continue_at
        log.info(
            "blob_upload_resumed",
            destination=client.host,
            offset=continue_at,
            size=size,
            error=str(broke),
        )
        resumed(client.host, "upload")
        await asyncio.sleep(decision.wait_seconds)
        await source.seek(continue_at)
    return location


async def _reopen(
    client: RegistryClient, kept: tuple[str, int], *, scope: str, size: int
) -> tuple[str, int] | None:
    """(URL, offset) to go on with the upload kept at `kept`, or None when the registry has
    dropped it (or holds less than it had acknowledged, or cannot say)."""
    location, acknowledged = kept
    status = await _status(client, location, scope=scope)
    if status is None or not acknowledged <= status[0] <= size:
        log.info(
            "blob_upload_restarted",
            destination=client.host,
            offset=acknowledged,
            reason="the registry dropped the session"
            if status is None
            else f"it holds {status[0]}",
        )
        return None
    held, location = status
    log.info("blob_upload_reopened", destination=client.host, offset=held, size=size)
    return location, held


async def _where(
    client: RegistryClient, location: str, *, scope: str, stalled: int
) -> tuple[tuple[int, str] | None, int]:
    """The session's status (see `_status`), asked again while the link is down (each failed
    ask a resume that brought nothing); with the stalled count after it."""
    while True:
        try:
            return await _status(client, location, scope=scope), stalled
        except TransportError:
            decision = after_break(offset=0, resumed_at=0, stalled=stalled)
            if decision is None:
                raise
            stalled = decision.stalled
            await asyncio.sleep(decision.wait_seconds)


async def _patch(
    client: RegistryClient,
    location: str,
    source: _Source,
    offset: int,
    length: int,
    *,
    scope: str,
) -> str:
    """One PATCH of `length` bytes at `offset`; returns the Location to use next."""
    body = source.take(length)
    if client.bandwidth is not None:
        body = client.bandwidth.metered(body)
    return await patch_chunk(client, location, body, offset=offset, length=length, scope=scope)


async def _status(client: RegistryClient, location: str, *, scope: str) -> tuple[int, str] | None:
    """(bytes held, Location) of the upload session, or None when the registry cannot say.
    A link still down raises TransportError."""
    try:
        # Tried once: the resume rule around it (domain/transfers/resumes.py) decides the
        # waits of a link that is down.
        resp = await client.request("GET", location, scope=scope, expected=(204, 200), retry=False)
    except TransportError:
        raise
    except RegistryError:
        return None
    held = upload_offset(resp.headers.get("range"))
    return None if held is None else (held, next_location(resp, location))
