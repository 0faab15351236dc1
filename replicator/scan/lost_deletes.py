"""What the origin of a lost delete still holds, read from its bytes; domain.routing.scan's
replay_delete decides from it whether the delete is replayed at the replica.

A registry's 200 to a HEAD is its word only. A registry restored from an older backup, broken
or hostile, that answered 200 to a blob HEAD for a blob it could not serve, or served another
image for the digest asked, made a reconcile pass replay a delete that never happened and
delete the other side's replica, the only copy left (test_active_active::TestLostDelete, the
lying-origin cases). So each fact here is a GET whose bytes are hashed against the digest
asked: the image's manifest, then its config blob (or an index's first child manifest).
"""

from __future__ import annotations

from replicator.domain.images.manifests import Descriptor
from replicator.errors import ManifestError, NotFoundError, ReplicatorError
from replicator.logs import get_logger
from replicator.registry import blobs, manifests
from replicator.registry.blob_reads import open_blob
from replicator.registry.client import RegistryClient

log = get_logger(__name__)


async def origin_facts(
    origin: RegistryClient, replica: RegistryClient, repository: str, digest: str
) -> tuple[bool | None, bool]:
    """(whether `origin` serves the image `digest`, whether it keeps the image's parts), as
    replay_delete takes them; the parts are asked only of an origin without the image."""
    serves = await serves_image(origin, repository, digest)
    keeps = serves is False and await keeps_parts(origin, replica, repository, digest)
    return serves, keeps


async def serves_image(origin: RegistryClient, repository: str, digest: str) -> bool | None:
    """True when `origin`'s manifest for `digest` hashes to it, False when it has none (404),
    None when it answers with other bytes (another image, or none it could parse)."""
    try:
        await manifests.get(origin, repository, digest)
    except NotFoundError:
        return False
    except ManifestError as exc:
        log.warning(
            "origin_serves_another_image",
            host=origin.host,
            repository=repository,
            digest=digest,
            error=str(exc),
        )
        return None
    return True


async def keeps_parts(
    origin: RegistryClient, replica: RegistryClient, repository: str, digest: str
) -> bool:
    """Whether `origin` still serves the parts of the image `digest` (read from `replica`'s
    copy): its config blob, or an index's first child manifest, their bytes hashing to their
    digests. A manifest DELETE leaves them; a restore from a backup older than the push does
    not (domain replay_delete). Anything absent or unreadable counts as not kept: the replica
    is then kept, never deleted."""
    try:
        manifest = await manifests.get(replica, repository, digest)
        if manifest.config is not None:
            await _read_whole(origin, repository, manifest.config)
            return True
        if manifest.children:
            child = manifest.children[0]
            await manifests.get(origin, repository, child.digest, size=child.size)
            return True
    except NotFoundError:
        return False
    except ReplicatorError as exc:
        log.info("image_parts_unknown", repository=repository, digest=digest, error=str(exc))
    return False


async def _read_whole(client: RegistryClient, repository: str, blob: Descriptor) -> None:
    """Read the blob through, checking its size and digest (DigestMismatch otherwise); a config
    blob is small, and its descriptor's size bounds what is read."""
    async with open_blob(client, repository, blob.digest, blob.size) as chunks:
        async for _ in blobs.verified(chunks, blob.digest, blob.size):
            pass
