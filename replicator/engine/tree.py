"""The manifests of an index tree, gathered level by level, with bounds a lying source cannot
get past: depth (MAX_TREE_DEPTH), total bytes (MAX_TREE_BYTES) and sha256 child names."""

from __future__ import annotations

from replicator.domain.images.manifests import Manifest
from replicator.engine.gather import gather_all
from replicator.engine.source_reads import SourceReads
from replicator.errors import ManifestError
from replicator.registry.client import RegistryClient

# An index nests at most this deep (an index of indexes is legal, deeper is not seen in practice);
# the bound also stops a cyclic reference from recursing forever.
MAX_TREE_DEPTH = 4
# An index tree's manifests are held together while it is copied: each is capped (8 MiB) and an
# index lists at most 4096 children, which alone would allow 32 GiB. A 50-platform image with
# attestations is well under 1 MiB of manifests; 64 MiB is far above any real tree.
MAX_TREE_BYTES = 64 * 1024 * 1024


async def gather_tree(
    reads: SourceReads, client: RegistryClient, repository: str, root: Manifest, *, where: str
) -> dict[str, Manifest]:
    """Every descendant manifest of `root`, by digest, fetched concurrently a level at a time.

    The total is bounded by the sizes the index declares before a level is fetched; a child
    whose size is not its descriptor's is refused as it arrives (a liar understating sizes is
    stopped at its first child), and the bytes read are counted as well. A child named by
    another digest than sha256 is refused: registries store manifests by sha256 (distribution
    refuses a PUT by another digest), so the index could not be copied as it is."""
    found: dict[str, Manifest] = {}
    level = [root]
    held = [len(root.raw)]

    def check(total: int) -> None:
        if total > MAX_TREE_BYTES:
            raise ManifestError(
                f"{where}@{root.digest}: the index tree holds more than the {MAX_TREE_BYTES} "
                "bytes of manifests allowed"
            )

    async def fetch(digest: str, declared: int) -> Manifest:
        manifest = await reads.manifest(client, repository, digest, size=declared)
        if len(manifest.raw) != declared:
            # As containerd and go-containerregistry do: a descriptor's size is part of what it
            # promises, and one understated would slip past the declared-size bound.
            raise ManifestError(
                f"{where}@{root.digest}: child manifest {digest} is {len(manifest.raw)} bytes, "
                f"its descriptor says {declared}"
            )
        held[0] += len(manifest.raw)
        check(held[0])
        return manifest

    for _depth in range(MAX_TREE_DEPTH):
        sizes = {c.digest: c.size for m in level for c in m.children if c.digest not in found}
        sizes.pop(root.digest, None)
        if not sizes:
            return found
        for digest in sizes:
            if not digest.startswith("sha256:"):
                raise ManifestError(
                    f"{where}@{root.digest}: child manifest {digest} is named by a digest other "
                    "than sha256, which registries cannot store it under"
                )
        check(held[0] + sum(sizes.values()))
        fetched = await gather_all(fetch(d, sizes[d]) for d in sorted(sizes))
        for manifest in fetched:
            found[manifest.digest] = manifest
        level = fetched
    raise ManifestError(f"{where}@{root.digest}: index nests deeper than {MAX_TREE_DEPTH}")
