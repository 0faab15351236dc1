"""Manifests: HEAD, GET (size-capped), PUT byte-for-byte, DELETE."""

from __future__ import annotations

from dataclasses import dataclass

from replicator.domain.images.manifests import (
    MAX_MANIFEST_BYTES,
    Manifest,
    digest_of,
    parse_manifest,
)
from replicator.domain.images.media import MANIFEST_ACCEPT
from replicator.domain.images.refs import is_digest
from replicator.errors import ManifestError, NotFoundError, RegistryError, ReplicatorError
from replicator.registry.client import RegistryClient, delete_scope, pull_scope, push_scope

# The OCI error code of a manifest PUT refused for a blob the repository does not hold.
MANIFEST_BLOB_UNKNOWN = "MANIFEST_BLOB_UNKNOWN"


@dataclass(frozen=True, slots=True)
class ManifestHead:
    """What a HEAD tells: digest, media type and size, without the body."""

    digest: str
    media_type: str
    size: int


async def head(client: RegistryClient, repository: str, reference: str) -> ManifestHead | None:
    """HEAD a manifest by tag or digest; None when it does not exist."""
    try:
        resp = await client.request(
            "HEAD",
            f"/v2/{repository}/manifests/{reference}",
            scope=pull_scope(repository),
            headers={"Accept": MANIFEST_ACCEPT},
        )
    except NotFoundError:
        return None
    digest = resp.headers.get("docker-content-digest", "")
    if digest and not is_digest(digest):
        # A digest goes into later URL paths: one the registry made up is not used; the body,
        # hashed by us, tells instead.
        digest = ""
    if not digest and reference.startswith("sha256:"):
        digest = reference
    if not digest:
        # Some registries omit Docker-Content-Digest on HEAD; the body tells for sure.
        return _head_of(await get(client, repository, reference))
    return ManifestHead(
        digest=digest,
        media_type=resp.headers.get("content-type", "").split(";")[0],
        size=int(resp.headers.get("content-length", "0") or 0),
    )


def _head_of(manifest: Manifest) -> ManifestHead:
    return ManifestHead(manifest.digest, manifest.media_type, len(manifest.raw))


async def get(
    client: RegistryClient, repository: str, reference: str, *, size: int | None = None
) -> Manifest:
    """GET and parse a manifest; the bytes are kept exactly as served. `size`, the size a
    descriptor promises for it, caps what is read: a source understating a child's size is
    stopped after that many bytes, not after MAX_MANIFEST_BYTES."""
    return await client.retried(lambda: _get_once(client, repository, reference, size))


async def _get_once(
    client: RegistryClient, repository: str, reference: str, size: int | None
) -> Manifest:
    """One GET of the manifest and its body (tried again whole by `get`)."""
    cap = MAX_MANIFEST_BYTES if size is None else min(size, MAX_MANIFEST_BYTES)
    path = f"/v2/{repository}/manifests/{reference}"
    async with client.stream(
        "GET",
        path,
        scope=pull_scope(repository),
        headers={"Accept": MANIFEST_ACCEPT},
        bulk=False,  # capped at MAX_MANIFEST_BYTES
    ) as resp:
        declared = int(resp.headers.get("content-length", "0") or 0)
        if size is not None and declared > cap:
            raise ManifestError(_over_descriptor(repository, reference, size))
        if declared > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"{repository}@{reference}: manifest is {declared} bytes, over the "
                f"{MAX_MANIFEST_BYTES} cap"
            )
        body = bytearray()
        async for chunk in resp.aiter_bytes():
            body.extend(chunk)
            if size is not None and len(body) > cap:
                raise ManifestError(_over_descriptor(repository, reference, size))
            if len(body) > MAX_MANIFEST_BYTES:
                raise ManifestError(
                    f"{repository}@{reference}: manifest exceeds the {MAX_MANIFEST_BYTES} byte cap"
                )
        content_type = resp.headers.get("content-type", "")
    raw = bytes(body)
    # A digest reference, sha256 or sha512, is verified against the bytes (parse_manifest
    # refuses any other algorithm); a tag names no digest to check.
    expected = reference if is_digest(reference) else None
    try:
        return parse_manifest(raw, content_type, digest=expected)
    except ManifestError as exc:
        raise ManifestError(f"{client.host}/{repository}@{reference}: {exc}") from exc


def _over_descriptor(repository: str, reference: str, size: int) -> str:
    return f"{repository}@{reference}: manifest is more than the {size} bytes its descriptor says"


async def put(
    client: RegistryClient,
    repository: str,
    reference: str,
    manifest: Manifest,
    *,
    replan_missing_blobs: bool = False,
) -> str:
    """PUT the manifest bytes unchanged under a tag or its digest; returns the digest stored.

    Tried again on a temporary error: a PUT is idempotent by digest (the same bytes under the
    same reference). With `replan_missing_blobs`, a refusal for a missing blob is raised at
    once instead, for a caller that answers it by planning again (engine/copier.py): repeating
    the PUT cannot bring the blob (otherwise it is retried, for distribution's link-file race)."""
    resp = await client.request(
        "PUT",
        f"/v2/{repository}/manifests/{reference}",
        scope=push_scope(repository),
        expected=(200, 201, 202),
        headers={"Content-Type": manifest.media_type},
        content=manifest.raw,
        retry=_blob_known if replan_missing_blobs else True,
    )
    stored = resp.headers.get("docker-content-digest") or digest_of(manifest.raw)
    if stored != manifest.digest:
        raise ManifestError(
            f"{client.host}/{repository}: stored manifest as {stored}, expected {manifest.digest}"
        )
    return stored


async def delete(client: RegistryClient, repository: str, reference: str) -> bool:
    """DELETE a manifest by digest (tags pointing at it go too), or a tag alone (OCI 1.1, not
    every registry has it: see engine/job.py); False when already gone.

    Tried again on a temporary error: a DELETE repeated after the first removed it (its answer
    lost) is answered 404, which is "already gone" here."""
    try:
        await client.request(
            "DELETE",
            f"/v2/{repository}/manifests/{reference}",
            scope=delete_scope(repository),
            expected=(200, 202),
            retry=True,
        )
    except NotFoundError:
        return False
    return True


def _blob_known(exc: ReplicatorError) -> bool:
    """Whether a failed manifest PUT may be tried again as is: not when refused for a blob the
    destination does not hold."""
    return not (isinstance(exc, RegistryError) and MANIFEST_BLOB_UNKNOWN in exc.error_codes)
