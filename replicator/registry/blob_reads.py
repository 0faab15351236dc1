"""Blob downloads that survive a dropped link: a read that breaks continues where it stopped.

The read asks again for the same blob with `Range: bytes=N-` (N = bytes already passed on),
through the registry each time, so a redirect to blob storage is asked afresh (its signed URL
may have expired) and carries the Range too. The caller sees one stream: `blobs.verified`
around it hashes every byte once, across the breaks, and checks size and digest at the end.
Memory: one network chunk.

    async with open_blob(client, repository, digest, size) as chunks:
        async for chunk in blobs.verified(chunks, digest, size): ...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager

from replicator.domain.transfers.resumes import after_break, download_skip, parse_content_range
from replicator.errors import RegistryError, TransportError
from replicator.logs import get_logger
from replicator.registry.client import RegistryClient, pull_scope
from replicator.registry.resumed import resumed

log = get_logger(__name__)


@asynccontextmanager
async def open_blob(
    client: RegistryClient, repository: str, digest: str, size: int, *, start: int = 0
) -> AsyncIterator[AsyncIterator[bytes]]:
    """The blob's bytes from `start` (unverified; see `blobs.verified`), resumed after a
    break for as long as resuming brings bytes."""
    chunks = _read(client, repository, digest, size, start)
    try:
        yield chunks
    finally:
        await chunks.aclose()


async def _read(
    client: RegistryClient, repository: str, digest: str, size: int, start: int
) -> AsyncGenerator[bytes]:
    offset = start
    stalled = 0
    while True:
        resumed_at = offset
        try:
            async for chunk in _read_once(client, repository, digest, offset):
                offset += len(chunk)
                yield chunk
            return  # the answer ended: `verified` judges whether it was whole
        except TransportError as exc:
            if offset >= size:
                return  # every byte came; only the end of the exchange was lost
            decision = after_break(offset=offset, resumed_at=resumed_at, stalled=stalled)
            if decision is None:
                raise
            stalled = decision.stalled
            log.info(
                "blob_read_resumed",
                source=client.host,
                digest=digest,
                offset=offset,
                size=size,
                error=str(exc),
            )
            resumed(client.host, "download")
            await asyncio.sleep(decision.wait_seconds)


async def _read_once(
    client: RegistryClient, repository: str, digest: str, offset: int
) -> AsyncIterator[bytes]:
    """One GET of the blob from `offset`, its bytes before `offset` dropped if the server
    sent the whole blob."""
    headers = {"Range": f"bytes={offset}-"} if offset else None
    async with client.stream(
        "GET",
        f"/v2/{repository}/blobs/{digest}",
        scope=pull_scope(repository),
        expected=(200, 206),
        headers=headers,
    ) as resp:
        skip = download_skip(
            status=resp.status_code,
            content_range=parse_content_range(resp.headers.get("content-range")),
            offset=offset,
        )
        if skip is None:
            raise RegistryError(
                f"GET {client.host} blob {digest}: asked from byte {offset}, answered "
                f"{resp.status_code} {resp.headers.get('content-range', '')!r}",
                status=resp.status_code,
                temporary=False,
            )
        chunks = resp.aiter_bytes()
        if client.bandwidth is not None:
            chunks = client.bandwidth.metered(chunks)
        async for received in chunks:
            dropped = min(skip, len(received))
            skip -= dropped
            if len(received) > dropped:
                yield received[dropped:] if dropped else received
