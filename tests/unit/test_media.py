"""Manifest media types and their classification (replicator/domain/images/media.py)."""

from __future__ import annotations

import pytest

from replicator.domain.images.media import (
    MANIFEST_ACCEPT,
    MANIFEST_TYPES,
    ManifestKind,
    MediaType,
    classify,
    is_manifest_type,
)

CLASSIFIED = [
    ("docker-manifest", MediaType.DOCKER_MANIFEST.value, ManifestKind.IMAGE),
    ("docker-list", MediaType.DOCKER_MANIFEST_LIST.value, ManifestKind.INDEX),
    ("oci-manifest", MediaType.OCI_MANIFEST.value, ManifestKind.IMAGE),
    ("oci-index", MediaType.OCI_INDEX.value, ManifestKind.INDEX),
    ("oci-artifact", MediaType.OCI_ARTIFACT.value, ManifestKind.ARTIFACT),
    ("charset", f"{MediaType.OCI_MANIFEST.value}; charset=utf-8", ManifestKind.IMAGE),
    ("charset-no-space", f"{MediaType.OCI_INDEX.value};charset=utf-8", ManifestKind.INDEX),
    ("padded", f"  {MediaType.DOCKER_MANIFEST.value}  ", ManifestKind.IMAGE),
    ("two-params", f"{MediaType.OCI_ARTIFACT.value}; a=1; b=2", ManifestKind.ARTIFACT),
    ("empty", "", None),
    ("json", "application/json", None),
    ("octet-stream", "application/octet-stream", None),
    ("schema1", "application/vnd.docker.distribution.manifest.v1+prettyjws", None),
    ("layer", "application/vnd.oci.image.layer.v1.tar+gzip", None),
    ("config", "application/vnd.oci.image.config.v1+json", None),
    ("prefix-only", "application/vnd.oci.image.manifest.v1", None),
    ("suffix-added", MediaType.OCI_MANIFEST.value + "x", None),
    ("param-only", "; charset=utf-8", None),
]


class TestClassify:
    """classify() and is_manifest_type() agree and ignore parameters."""

    @pytest.mark.parametrize(
        ("media_type", "expected"),
        [(media_type, kind) for _, media_type, kind in CLASSIFIED],
        ids=[case[0] for case in CLASSIFIED],
    )
    def test_classify(self, media_type: str, expected: ManifestKind | None) -> None:
        """Each media type maps to its kind, or None when it is not a manifest type."""
        assert classify(media_type) is expected

    @pytest.mark.parametrize(
        ("media_type", "expected"),
        [(media_type, kind is not None) for _, media_type, kind in CLASSIFIED],
        ids=[case[0] for case in CLASSIFIED],
    )
    def test_is_manifest_type(self, media_type: str, expected: bool) -> None:
        """is_manifest_type() is True exactly for the types classify() knows."""
        assert is_manifest_type(media_type) is expected

    @pytest.mark.parametrize("media_type", list(MediaType), ids=[m.name for m in MediaType])
    def test_every_media_type_is_a_manifest_type(self, media_type: MediaType) -> None:
        """Every MediaType member is one the engine copies."""
        assert media_type.value in MANIFEST_TYPES


class TestManifestAccept:
    """The Accept header sent on manifest requests."""

    @pytest.mark.parametrize("media_type", list(MediaType), ids=[m.name for m in MediaType])
    def test_accept_lists_every_type(self, media_type: MediaType) -> None:
        """Every copyable type is accepted, so no registry down-converts to schema 1."""
        assert media_type.value in [part.strip() for part in MANIFEST_ACCEPT.split(",")]

    def test_accept_lists_nothing_else(self) -> None:
        """The Accept header names no type the engine cannot copy."""
        assert {part.strip() for part in MANIFEST_ACCEPT.split(",")} == MANIFEST_TYPES
