"""What a destination holds of an image, as `domain.transfers.plan` needs it: asked of the
destination (HEADs of the child manifests and of the blobs the plan may skip), checked against
what this process remembers (`BlobLocations`), and where a missing blob may be mounted from.

The destination's answer beats memory: a blob remembered there and now said absent makes the
process forget all it believed of that destination (a restore, a garbage collection).
"""

from __future__ import annotations

from collections.abc import Sequence

from replicator.domain.images.manifests import Manifest
from replicator.domain.transfers.plan import (
    DestinationFacts,
    blobs_to_check,
    unreadable_is_absent,
)
from replicator.engine.blob_locations import BlobLocations
from replicator.engine.endpoint import Endpoint
from replicator.engine.gather import gather_all
from replicator.errors import RegistryError
from replicator.logs import get_logger
from replicator.registry import blobs, manifests

log = get_logger(__name__)


async def manifest_head(dst: Endpoint, reference: str) -> manifests.ManifestHead | None:
    """HEAD of a manifest at the destination; an answer the registry cannot give for it (a
    5xx after retries: a link file left empty) is "not there", and the PUT that follows
    rewrites it (domain.transfers.plan.unreadable_is_absent)."""
    try:
        return await manifests.head(dst.client, dst.repository, reference)
    except RegistryError as exc:
        if not unreadable_is_absent(exc.status):
            raise
        log.warning("destination_manifest_unreadable", reference=reference, error=str(exc))
        return None


async def destination_facts(
    locations: BlobLocations,
    root: Manifest,
    children: dict[str, Manifest],
    dst: Endpoint,
    *,
    dest_absent: bool = False,
) -> DestinationFacts:
    """The manifests and blobs of `root`'s tree `dst` holds, and the mount source of each
    missing blob that has one. With `dest_absent` (the destination said the repository does not
    exist) nothing is asked: it holds no manifest and no blob (blobs this process placed
    meanwhile are known to BlobTransfers.ensure)."""
    manifest_digests = [] if dest_absent else sorted(children)
    heads = await gather_all(
        manifests.head(dst.client, dst.repository, d) for d in manifest_digests
    )
    present = frozenset(d for d, h in zip(manifest_digests, heads, strict=True) if h)
    candidates = blobs_to_check(root, children, present, foreign_layers=dst.foreign_layers)
    asked = locations.mark()
    sizes = await gather_all(
        blobs.head(dst.client, dst.repository, d) for d in ([] if dest_absent else candidates)
    )
    if dest_absent:
        sizes = [None] * len(candidates)
    blobs_present = frozenset(d for d, s in zip(candidates, sizes, strict=True) if s is not None)
    for digest in blobs_present:
        locations.remember(dst.client.host, digest, dst.repository)
    if not dest_absent:
        _forget_if_contradicted(locations, dst, candidates, blobs_present, asked)
    missing = [d for d in candidates if d not in blobs_present]
    return DestinationFacts(present, blobs_present, await _mountable(locations, dst, missing))


def _forget_if_contradicted(
    locations: BlobLocations,
    dst: Endpoint,
    candidates: Sequence[str],
    blobs_present: frozenset[str],
    asked: int,
) -> None:
    """A blob remembered at `dst` (before `asked`) and now said absent: one blob gone that was
    there means the registry may have lost any of them, so nothing believed of it is kept."""
    forgotten = [
        d
        for d in candidates
        if d not in blobs_present
        and locations.contradicted(dst.client.host, d, dst.repository, asked_at=asked)
    ]
    if not forgotten:
        return
    dropped = locations.forget_destination(dst.client.host)
    log.warning(
        "destination_memory_dropped",
        host=dst.client.host,
        destination_image=str(dst),
        contradicted=len(forgotten),
        blobs_forgotten=len(forgotten) + dropped,
    )


async def _mountable(
    locations: BlobLocations, dst: Endpoint, missing: Sequence[str]
) -> dict[str, str]:
    """The repository of `dst`'s registry to mount each missing blob from, where one is known."""
    mountable = {
        d: repo
        for d in missing
        if (repo := locations.holder(dst.client.host, d)) is not None and repo != dst.repository
    }
    if len(mountable) < len(missing):
        # A blob this process has not seen at the destination may still be there in a
        # sibling repository (pushed by an earlier run): try mounting from one. A wrong
        # guess costs nothing: the registry answers 202 with an upload session we use.
        sibling = await locations.sibling(dst.client, dst.repository)
        if sibling is not None:
            mountable = {d: mountable.get(d, sibling) for d in missing}
    return mountable
