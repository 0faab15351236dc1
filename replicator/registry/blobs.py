"""Blobs: HEAD, digest verification of a streamed GET (`blob_reads`), cross-repository mount,
streamed upload.

The upload path reads as named steps, as go-containerregistry's does: check existing (HEAD),
initiate (POST, trying a mount), stream (one PUT, or PATCH chunks above a threshold), commit.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from replicator.errors import DigestMismatch, NotFoundError, RegistryError
from replicator.registry.client import RegistryClient, pull_scope, push_scope

# Blobs up to 64 MiB go up in one streamed PUT: one round trip, and most layers are smaller.
# Above it, PATCH chunks keep a dropped connection from wasting the whole upload and stay under
# the request-body caps of the proxies in front of registries (nginx's client_max_body_size,
# 100 MB at some CDNs). [workers] chunk_threshold overrides it.
DEFAULT_CHUNK_THRESHOLD = 64 * 1024 * 1024
# Blob transfers in flight across all copies of the process ([workers] concurrency, and
# `copy --concurrency`): enough to keep a few registries' request slots busy.
DEFAULT_CONCURRENCY = 16
# Size of each PATCH chunk above the threshold; large enough that request overhead is negligible.
DEFAULT_CHUNK_SIZE = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class MountResult:
    """A mount either happened, or the registry opened an upload session we can use instead."""

    mounted: bool
    location: str | None


async def head(client: RegistryClient, repository: str, digest: str) -> int | None:
    """The blob's size when the repository has it, else None."""
    try:
        resp = await client.request(
            "HEAD", f"/v2/{repository}/blobs/{digest}", scope=pull_scope(repository)
        )
    except NotFoundError:
        return None
    return int(resp.headers.get("content-length", "0") or 0)


async def verified(chunks: AsyncIterator[bytes], digest: str, size: int) -> AsyncIterator[bytes]:
    """Pass bytes through, hashing them; raise DigestMismatch before the last chunk leaves.

    The last chunk is held back until the whole stream has been hashed: an upload whose
    Content-Length is complete would be committed by the registry, so a mismatch must abort
    the request while it still lacks bytes. Memory: one network chunk.
    """
    algorithm, _, expected = digest.partition(":")
    hasher = hashlib.new(algorithm)
    seen = 0
    held: bytes | None = None
    async for chunk in chunks:
        if not chunk:
            continue
        hasher.update(chunk)
        seen += len(chunk)
        if seen > size:
            raise DigestMismatch(f"blob {digest} is longer than its descriptor's {size} bytes")
        if held is not None:
            yield held
        held = chunk
    if seen != size:
        raise DigestMismatch(f"blob {digest}: got {seen} bytes, its descriptor says {size}")
    if hasher.hexdigest() != expected:
        raise DigestMismatch(f"blob bytes hash to {algorithm}:{hasher.hexdigest()}, not {digest}")
    if held is not None:
        yield held


async def mount(
    client: RegistryClient, repository: str, digest: str, from_repository: str
) -> MountResult:
    """Cross-repository mount; 201 = mounted, 202 = not mounted but an upload session is open.
    Tried again on a temporary error: a repeated mount mounts the same blob, or at worst opens
    an upload session nobody uses, which the registry expires."""
    resp = await client.request(
        "POST",
        f"/v2/{repository}/blobs/uploads/",
        scope=push_scope(repository, mount_from=from_repository),
        params={"mount": digest, "from": from_repository},
        expected=(201, 202),
        retry=True,
    )
    if resp.status_code == 201:
        return MountResult(mounted=True, location=None)
    return MountResult(mounted=False, location=_location(resp))


async def start_upload(client: RegistryClient, repository: str) -> str:
    """Open an upload session; returns its Location (absolute or relative, as the registry said).
    Tried again on a temporary error: a session opened by a try whose answer was lost is left
    unused, and the registry expires it."""
    resp = await client.request(
        "POST",
        f"/v2/{repository}/blobs/uploads/",
        scope=push_scope(repository),
        expected=(202, 201),
        retry=True,
    )
    return _location(resp)


def _location(resp: httpx.Response) -> str:
    location = resp.headers.get("location")
    if not location:
        raise RegistryError(
            f"{resp.request.url.host}: upload answer {resp.status_code} has no Location header",
            status=resp.status_code,
            temporary=False,
        )
    # Relative Locations (distribution answers "/v2/<name>/blobs/uploads/<uuid>?_state=..") are
    # resolved against the request URL, as RFC 9110 says; absolute ones are kept as given.
    return str(resp.request.url.join(location))


def _with_digest(location: str, digest: str) -> str:
    return str(httpx.URL(location).copy_merge_params({"digest": digest}))


async def upload(
    client: RegistryClient,
    repository: str,
    digest: str,
    size: int,
    chunks: AsyncIterator[bytes],
    *,
    location: str | None = None,
    chunk_threshold: int = DEFAULT_CHUNK_THRESHOLD,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> None:
    """Stream `chunks` (already wrapped by `verified`) into the repository as blob `digest`."""
    location = location or await start_upload(client, repository)
    scope = push_scope(repository)
    if client.bandwidth is not None:
        chunks = client.bandwidth.metered(chunks)
    try:
        if size <= chunk_threshold:
            # Monolithic: one PUT carrying the body, the digest in the query (OCI "single PUT").
            await client.request(
                "PUT",
                _with_digest(location, digest),
                scope=scope,
                expected=(201, 204),
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                content=chunks,
            )
            return
        location = await _patch_chunks(
            client, location, scope=scope, size=size, chunks=chunks, chunk_size=chunk_size
        )
        await finish_upload(client, location, digest, scope=scope)
    except BaseException:
        await cancel_upload(client, location, scope)
        raise


async def _patch_chunks(
    client: RegistryClient,
    location: str,
    *,
    scope: str,
    size: int,
    chunks: AsyncIterator[bytes],
    chunk_size: int,
) -> str:
    """Send the stream as PATCH requests of `chunk_size` bytes each; returns the last Location."""
    source = _Rechunker(chunks)
    offset = 0
    while offset < size:
        length = min(chunk_size, size - offset)
        location = await patch_chunk(
            client, location, source.take(length), offset=offset, length=length, scope=scope
        )
        offset += length
    return location


async def finish_upload(client: RegistryClient, location: str, digest: str, *, scope: str) -> None:
    """The PUT ending a chunked upload session: the blob is `digest`, its bytes all sent."""
    await client.request(
        "PUT",
        _with_digest(location, digest),
        scope=scope,
        expected=(201, 204),
        headers={"Content-Length": "0"},
    )


async def patch_chunk(
    client: RegistryClient,
    location: str,
    body: AsyncIterator[bytes],
    *,
    offset: int,
    length: int,
    scope: str,
) -> str:
    """One PATCH of the `length` bytes of `body` at `offset` of the upload session; returns the
    Location to use next."""
    resp = await client.request(
        "PATCH",
        location,
        scope=scope,
        expected=(202, 204),
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Length": str(length),
            "Content-Range": f"{offset}-{offset + length - 1}",
        },
        content=body,
    )
    return next_location(resp, location)


def next_location(resp: httpx.Response, location: str) -> str:
    """The Location an upload answer gives to use next (distribution's holds the upload's
    state), resolved against the request URL as RFC 9110 says; `location` when it gives none."""
    given = resp.headers.get("location")
    return str(resp.request.url.join(given)) if given else location


class _Rechunker:
    """Splits one byte stream into consecutive sub-streams of exact lengths, without copying all."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    async def take(self, length: int) -> AsyncIterator[bytes]:
        """Yield exactly `length` bytes from the stream (less only if it ends early)."""
        remaining = length
        while remaining > 0:
            if not self._pending:
                try:
                    self._pending = await anext(self._chunks)
                except StopAsyncIteration:
                    return
            piece, self._pending = self._pending[:remaining], self._pending[remaining:]
            remaining -= len(piece)
            yield piece


async def cancel_upload(client: RegistryClient, location: str, scope: str) -> None:
    """Best-effort DELETE of an upload session so no partial upload lingers at the registry;
    tried once (the registry expires a session left behind, and a failing upload's error is
    not to wait for its cleanup)."""
    try:
        await client.request(
            "DELETE", location, scope=scope, expected=(200, 202, 204, 404), retry=False
        )
    except RegistryError:
        return
