"""Media types of manifests and how each is classified."""

from __future__ import annotations

from enum import StrEnum


class MediaType(StrEnum):
    """Manifest media types the engine copies."""

    DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
    DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
    OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
    OCI_INDEX = "application/vnd.oci.image.index.v1+json"
    # OCI 1.1 dropped the artifact manifest, but registries and cosign versions of 2023 wrote it.
    OCI_ARTIFACT = "application/vnd.oci.artifact.manifest.v1+json"


class ManifestKind(StrEnum):
    """What a manifest is, for the copy order: images and artifacts before indexes."""

    IMAGE = "image"
    INDEX = "index"
    ARTIFACT = "artifact"


INDEX_TYPES = frozenset({MediaType.DOCKER_MANIFEST_LIST.value, MediaType.OCI_INDEX.value})
IMAGE_TYPES = frozenset({MediaType.DOCKER_MANIFEST.value, MediaType.OCI_MANIFEST.value})
ARTIFACT_TYPES = frozenset({MediaType.OCI_ARTIFACT.value})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_TYPES | ARTIFACT_TYPES

# The Accept header for manifest requests: every type we can copy, so the registry never
# down-converts to schema 1 (distribution does that for clients that accept nothing better).
MANIFEST_ACCEPT = ", ".join(
    [
        MediaType.OCI_INDEX.value,
        MediaType.OCI_MANIFEST.value,
        MediaType.DOCKER_MANIFEST_LIST.value,
        MediaType.DOCKER_MANIFEST.value,
        MediaType.OCI_ARTIFACT.value,
    ]
)


def base_type(media_type: str) -> str:
    """`media_type` without its parameters (`; charset=...`) and the spaces around it."""
    return media_type.split(";", 1)[0].strip()


def is_manifest_type(media_type: str) -> bool:
    """Whether `media_type` (parameters ignored) is a manifest type we copy."""
    return base_type(media_type) in MANIFEST_TYPES


def classify(media_type: str) -> ManifestKind | None:
    """The kind of a manifest media type, or None when it is not a manifest type."""
    base = base_type(media_type)
    if base in INDEX_TYPES:
        return ManifestKind.INDEX
    if base in IMAGE_TYPES:
        return ManifestKind.IMAGE
    if base in ARTIFACT_TYPES:
        return ManifestKind.ARTIFACT
    return None


# Non-distributable ("foreign") layers: Windows base images point at Microsoft's servers with
# `urls` and their licence forbids copying them. Registries do not require them to be present
# (distribution skips its blob check for these types), and clients fetch them from `urls`.
FOREIGN_LAYER_TYPES = frozenset(
    {
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)


def is_foreign_layer(media_type: str) -> bool:
    """Whether a layer of `media_type` is non-distributable (left where its `urls` point)."""
    return base_type(media_type) in FOREIGN_LAYER_TYPES
