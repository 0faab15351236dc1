"""Copy planning: from what the source holds and what the destination has, the steps to take.

The engine gathers facts (manifests from the source, HEADs at the destination), this module
decides, the engine acts. Two decisions: `quick_check` on digests alone (the cheap no-op path),
then `plan_copy` on the whole manifest tree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from replicator.domain.images.manifests import Descriptor, Manifest
from replicator.domain.images.media import ManifestKind, is_foreign_layer


class Shortcut(StrEnum):
    """What the digests alone say about an image at the destination."""

    UP_TO_DATE = "up_to_date"  # the destination tag (or digest) already names the source digest
    TAG_ONLY = "tag_only"  # the manifest is there by digest, only the tag is missing or moved
    FULL = "full"  # the manifest is missing: plan the whole tree


# The first status of the 5xx class: the registry failed to answer for what it was asked.
SERVER_ERROR = 500


def unreadable_is_absent(status: int | None) -> bool:
    """Whether a destination manifest HEAD that failed with `status` (after the client's
    retries) is planned as "not there": a 5xx answer is. docker-registry killed while writing
    a tag's or a revision's link file leaves it empty and answers 500 for that reference for
    good, while the manifest PUT that follows rewrites the link; a job that stopped at the
    HEAD never repaired it (FAILED MAX_ATTEMPTS, bench seed active-active 4029). A registry
    really down fails that PUT as it failed the HEAD, so nothing is lost by planning it."""
    return status is not None and status >= SERVER_ERROR


def quick_check(
    *, source_digest: str, tag: str | None, dest_tag_digest: str | None, dest_has_digest: bool
) -> Shortcut:
    """Decide from digests whether anything but HEAD requests is needed."""
    if tag is not None and dest_tag_digest == source_digest:
        return Shortcut.UP_TO_DATE
    if dest_has_digest:
        return Shortcut.TAG_ONLY if tag is not None else Shortcut.UP_TO_DATE
    return Shortcut.FULL


class BlobAction(StrEnum):
    """How one blob reaches the destination repository."""

    SKIP = "skip"  # already there
    MOUNT = "mount"  # the destination has it in another repository: mount, no bytes move
    COPY = "copy"  # stream it from the source


@dataclass(frozen=True, slots=True)
class BlobStep:
    """One blob and what to do about it."""

    descriptor: Descriptor
    action: BlobAction
    mount_from: str | None = None


@dataclass(frozen=True, slots=True)
class DestinationFacts:
    """What the destination repository (and registry) was seen to hold."""

    manifests_present: frozenset[str] = frozenset()
    blobs_present: frozenset[str] = frozenset()
    # digest -> another repository at the same destination registry known to hold that blob
    mountable: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CopyPlan:
    """Blobs first, then manifests in dependency order (children before parents), then the tag.

    `manifests` are PUT by digest; the root is PUT under `tag` when there is one, which stores
    it and moves the tag in one request, so a tag never names an incomplete image.
    """

    root: Manifest
    blobs: tuple[BlobStep, ...]
    manifests: tuple[Manifest, ...]
    tag: str | None

    def count(self, action: BlobAction) -> int:
        """How many blobs get `action`."""
        return sum(1 for step in self.blobs if step.action is action)

    @property
    def bytes_to_copy(self) -> int:
        """Bytes that will be streamed from the source."""
        return sum(s.descriptor.size for s in self.blobs if s.action is BlobAction.COPY)


def dependency_order(root: Manifest, children: Mapping[str, Manifest]) -> tuple[Manifest, ...]:
    """Every manifest of the tree once, each after all of its children (post-order)."""
    ordered: list[Manifest] = []
    seen: set[str] = set()

    def visit(manifest: Manifest) -> None:
        if manifest.digest in seen:
            return
        seen.add(manifest.digest)
        for child in manifest.children:
            if child.digest in children:
                visit(children[child.digest])
        ordered.append(manifest)

    visit(root)
    return tuple(ordered)


def plan_copy(
    root: Manifest,
    children: Mapping[str, Manifest],
    dest: DestinationFacts,
    *,
    tag: str | None,
    foreign_layers: bool = False,
) -> CopyPlan:
    """The steps to bring `root` (and its tree) to a destination holding `dest`.

    Foreign (non-distributable) layers are left out unless `foreign_layers`, as crane does: the
    manifest is copied as it is and still names them, and clients fetch them from their `urls`.
    """
    tree = dependency_order(root, children)
    missing = [m for m in tree if m.digest not in dest.manifests_present]
    steps: list[BlobStep] = []
    planned: set[str] = set()
    for manifest in missing:
        if manifest.kind is ManifestKind.INDEX:
            continue
        for blob in manifest.blobs:
            if blob.digest not in planned and (foreign_layers or not _foreign(blob)):
                planned.add(blob.digest)
                steps.append(_blob_step(blob, dest))
    manifests = [m for m in missing if m.digest != root.digest]
    if root.digest not in dest.manifests_present or tag is not None:
        manifests.append(root)  # last; under the tag when there is one
    return CopyPlan(root=root, blobs=tuple(steps), manifests=tuple(manifests), tag=tag)


def _foreign(blob: Descriptor) -> bool:
    return is_foreign_layer(blob.media_type)


def _blob_step(blob: Descriptor, dest: DestinationFacts) -> BlobStep:
    if blob.digest in dest.blobs_present:
        return BlobStep(blob, BlobAction.SKIP)
    source_repo = dest.mountable.get(blob.digest)
    if source_repo is not None:
        return BlobStep(blob, BlobAction.MOUNT, mount_from=source_repo)
    return BlobStep(blob, BlobAction.COPY)


def blobs_to_check(
    root: Manifest,
    children: Mapping[str, Manifest],
    present: frozenset[str],
    *,
    foreign_layers: bool = False,
) -> tuple[str, ...]:
    """Blob digests worth a HEAD at the destination: those of manifests it does not have (and
    not the foreign layers that will not be copied).

    A manifest the destination already holds had all its blobs checked by the registry when it
    was PUT (distribution refuses a manifest with unknown blobs), so its blobs need no HEAD.
    """
    digests: dict[str, None] = {}
    for manifest in dependency_order(root, children):
        if manifest.digest in present or manifest.kind is ManifestKind.INDEX:
            continue
        for blob in manifest.blobs:
            if foreign_layers or not _foreign(blob):
                digests.setdefault(blob.digest, None)
    return tuple(digests)


def referrer_tag_names(subject_digest: str) -> tuple[str, ...]:
    """The tags of the OCI fallback tag schema and cosign that may refer to `subject_digest`.

    `sha256-<hex>` is the OCI 1.1 referrers tag; cosign writes `sha256-<hex>.sig`, `.att` and
    `.sbom` beside it.
    """
    algorithm, _, hexpart = subject_digest.partition(":")
    base = f"{algorithm}-{hexpart}"
    return (base, f"{base}.sig", f"{base}.att", f"{base}.sbom")


def referrer_tags(tags: Sequence[str], subject_digest: str) -> tuple[str, ...]:
    """Those of `tags` that are referrer tags of `subject_digest` (referrer_tag_names)."""
    wanted = set(referrer_tag_names(subject_digest))
    return tuple(t for t in tags if t in wanted)
