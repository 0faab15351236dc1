"""Parse manifest bytes into descriptors: config, layers, children, subject."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from replicator.domain.images.media import ManifestKind, classify
from replicator.domain.images.refs import validate_digest
from replicator.errors import InvalidReferenceError, ManifestError

# regclient and containerd refuse manifests over 4-8 MiB: a real manifest is a few KiB, and the
# cap bounds memory since a manifest, unlike a blob, must be held whole to be parsed.
MAX_MANIFEST_BYTES = 8 * 1024 * 1024
# An index with more children than this is refused: real multi-platform indexes have < 100.
MAX_CHILDREN = 4096
# Layers per image: Docker caps images at 127 layers; OCI artifacts may carry many files.
MAX_BLOBS = 10_000


@dataclass(frozen=True, slots=True)
class Descriptor:
    """An OCI content descriptor: what a manifest points at."""

    media_type: str
    digest: str
    size: int
    platform: str | None = None
    artifact_type: str | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """A parsed manifest; `raw` is kept byte-exact so the copy preserves the digest."""

    digest: str
    media_type: str
    kind: ManifestKind
    raw: bytes
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    children: tuple[Descriptor, ...]
    subject: Descriptor | None
    artifact_type: str | None = None

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """Config first, then layers: every blob this manifest needs at the destination."""
        return ((self.config,) if self.config else ()) + self.layers


def digest_of(data: bytes) -> str:
    """The sha256 digest of `data`, as a registry computes it."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise ManifestError(f"{where} is not a descriptor object")
    digest = value.get("digest")
    size = value.get("size")
    media_type = value.get("mediaType", "")
    if not isinstance(digest, str):
        raise ManifestError(f"{where}.digest is missing or not a string")
    try:
        validate_digest(digest)
    except InvalidReferenceError as exc:
        raise ManifestError(f"{where}.digest: {exc}") from exc
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestError(f"{where}.size is missing or not a non-negative integer")
    if not isinstance(media_type, str):
        raise ManifestError(f"{where}.mediaType is not a string")
    platform = value.get("platform")
    platform_text = None
    if isinstance(platform, dict):
        parts = [str(platform.get(k, "")) for k in ("os", "architecture", "variant")]
        platform_text = "/".join(p for p in parts if p)
    artifact_type = value.get("artifactType")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        platform=platform_text,
        artifact_type=artifact_type if isinstance(artifact_type, str) else None,
    )


def _descriptor_list(doc: dict[str, Any], key: str, limit: int) -> tuple[Descriptor, ...]:
    items = doc.get(key) or []
    if not isinstance(items, list):
        raise ManifestError(f"{key} is not a list")
    if len(items) > limit:
        raise ManifestError(f"{key} has {len(items)} entries, more than the limit of {limit}")
    return tuple(_descriptor(item, f"{key}[{i}]") for i, item in enumerate(items))


def parse_manifest(
    raw: bytes, media_type: str | None = None, digest: str | None = None
) -> Manifest:
    """Parse manifest bytes; `media_type` is the Content-Type, used when the body has none."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest is {len(raw)} bytes, over the {MAX_MANIFEST_BYTES} cap")
    actual = digest_of(raw)
    if digest is not None and digest != actual:
        # A sha512 reference is checked with sha512; any other algorithm is refused, not trusted.
        algorithm, _, expected = digest.partition(":")
        if algorithm != "sha512" or hashlib.sha512(raw).hexdigest() != expected:
            raise ManifestError(f"manifest bytes hash to {actual}, not the requested {digest}")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad JSON, bad UTF-8 and integers over Python's digit limit;
        # RecursionError is deeply nested arrays, which fit easily under the size cap.
        raise ManifestError(f"manifest is not valid JSON: {str(exc)[:200]}") from exc
    if not isinstance(doc, dict):
        raise ManifestError("manifest JSON is not an object")
    body_type = doc.get("mediaType")
    has_body_type = isinstance(body_type, str) and bool(body_type)
    declared = body_type if isinstance(body_type, str) and body_type else (media_type or "")
    kind = classify(declared)
    # No mediaType in the body and a Content-Type that is no manifest type (say
    # application/json): the shape decides, and its type is what a PUT must declare.
    if kind is None and not has_body_type and "manifests" in doc:
        kind, declared = ManifestKind.INDEX, "application/vnd.oci.image.index.v1+json"
    elif kind is None and not has_body_type and "config" in doc and doc.get("schemaVersion") == 2:
        kind, declared = ManifestKind.IMAGE, "application/vnd.oci.image.manifest.v1+json"
    if kind is None:
        raise ManifestError(f"unsupported manifest media type {declared[:100]!r}")
    config = _descriptor(doc["config"], "config") if "config" in doc else None
    layer_key = "blobs" if kind is ManifestKind.ARTIFACT else "layers"
    layers = _descriptor_list(doc, layer_key, MAX_BLOBS)
    children = (
        _descriptor_list(doc, "manifests", MAX_CHILDREN) if kind is ManifestKind.INDEX else ()
    )
    if kind is ManifestKind.IMAGE and config is None:
        raise ManifestError("image manifest has no config descriptor")
    subject = (
        _descriptor(doc["subject"], "subject") if isinstance(doc.get("subject"), dict) else None
    )
    for child in children:
        if child.digest == actual:
            raise ManifestError("index lists itself as a child")
    if subject is not None and subject.digest == actual:
        raise ManifestError("manifest names itself as its subject")
    artifact_type = doc.get("artifactType")
    return Manifest(
        digest=actual,
        media_type=declared,
        kind=kind,
        raw=raw,
        config=config,
        layers=layers,
        children=children,
        subject=subject,
        artifact_type=artifact_type if isinstance(artifact_type, str) else None,
    )
