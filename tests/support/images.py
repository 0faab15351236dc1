"""Build OCI image layouts on disk: seeded layers, images, two-platform indexes, signatures.

Everything is deterministic: a layer is a tar holding `random.Random(seed).randbytes(size)`, so
the same seed gives the same blob in every image and every layout (shared base layers), and a
whole corpus has the same digests on every run. The layout is what `skopeo copy oci:DIR:TAG`
reads; `tests/support/skopeo.py` pushes it.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import random
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SBOM_ARTIFACT_TYPE = "application/spdx+json"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
# Level 1: the layer payload is random and does not compress; a higher level only costs time.
GZIP_LEVEL = 1
# The two platforms of the multi-platform index tests and the bench corpus.
PLATFORMS = (("linux", "amd64"), ("linux", "arm64"))
KIB = 1024
# The seed of the base layer the images of `OCILayout.siblings` share (the tests wrote 1).
SHARED_BASE_SEED = 1


@dataclass(frozen=True)
class LayerSpec:
    """A layer to build: `size` random bytes from `seed`, in a tar, gzip-compressed or not."""

    seed: int
    size: int
    compressed: bool = True


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor of a blob or manifest written to the layout."""

    media_type: str
    digest: str
    size: int
    extra: tuple[tuple[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The descriptor as it appears inside a manifest."""
        value: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        value.update(dict(self.extra))
        return value


@dataclass(frozen=True)
class BuiltImage:
    """What was built: the manifest (or index) digest, its blobs and its children."""

    tag: str | None
    digest: str
    media_type: str
    size: int
    config_digest: str | None = None
    layer_digests: tuple[str, ...] = ()
    children: tuple[BuiltImage, ...] = ()

    @property
    def blob_digests(self) -> frozenset[str]:
        """Every blob digest of this image and of its children (config and layers)."""
        own = set(self.layer_digests)
        if self.config_digest is not None:
            own.add(self.config_digest)
        for child in self.children:
            own |= child.blob_digests
        return frozenset(own)

    @property
    def manifest_digests(self) -> tuple[str, ...]:
        """This manifest's digest followed by its children's."""
        return (self.digest, *(child.digest for child in self.children))


def sha256_digest(data: bytes) -> str:
    """`sha256:<hex>` of data."""
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def canonical_json(value: dict[str, Any]) -> bytes:
    """Compact, key-sorted JSON: stable bytes, hence stable digests."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def signature_tag(subject_digest: str) -> str:
    """The cosign tag of a subject's signature: `sha256-<hex>.sig`."""
    return subject_digest.replace(":", "-") + ".sig"


def referrers_tag(subject_digest: str) -> str:
    """The OCI 1.1 referrers tag schema fallback for a subject: `sha256-<hex>`."""
    return subject_digest.replace(":", "-")


@dataclass
class OCILayout:
    """An OCI image layout directory being built; `index.json` is rewritten on every tag."""

    path: Path
    _refs: list[dict[str, Any]] = field(default_factory=list)
    _layer_cache: dict[LayerSpec, tuple[Descriptor, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self._write_index()

    def _write_index(self) -> None:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self._refs}
        (self.path / "index.json").write_bytes(canonical_json(index))

    def add_blob(self, data: bytes, media_type: str, **extra: Any) -> Descriptor:
        """Write data as a blob; return its descriptor."""
        digest = sha256_digest(data)
        target = self.path / "blobs" / "sha256" / digest.split(":", 1)[1]
        if not target.exists():
            target.write_bytes(data)
        return Descriptor(media_type, digest, len(data), tuple(sorted(extra.items())))

    def tag(self, descriptor: Descriptor, tag: str) -> None:
        """Name a manifest in index.json, so `oci:DIR:TAG` finds it."""
        self._refs = [ref for ref in self._refs if ref["annotations"][REF_NAME_ANNOTATION] != tag]
        entry = descriptor.to_json()
        entry["annotations"] = {REF_NAME_ANNOTATION: tag}
        self._refs.append(entry)
        self._write_index()

    def layer(self, spec: LayerSpec, *, docker: bool = False) -> tuple[Descriptor, str]:
        """Build (once) the layer blob of spec; return its descriptor and its diff_id."""
        if spec in self._layer_cache:
            return self._layer_cache[spec]
        payload = random.Random(spec.seed).randbytes(spec.size)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            info = tarfile.TarInfo(f"layer-{spec.seed}.bin")
            info.size = len(payload)
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(payload))
        tar_bytes = buffer.getvalue()
        diff_id = sha256_digest(tar_bytes)
        if spec.compressed:
            data = gzip.compress(tar_bytes, compresslevel=GZIP_LEVEL, mtime=0)
            media_type = DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP
        else:
            data = tar_bytes
            media_type = OCI_LAYER_TAR
        result = (self.add_blob(data, media_type), diff_id)
        self._layer_cache[spec] = result
        return result

    def add_manifest(self, manifest: dict[str, Any], tag: str | None, **extra: Any) -> Descriptor:
        """Write a manifest (or index) as a blob and optionally tag it."""
        descriptor = self.add_blob(canonical_json(manifest), manifest["mediaType"], **extra)
        if tag is not None:
            self.tag(descriptor, tag)
        return descriptor

    def image(
        self,
        tag: str | None,
        layers: list[LayerSpec],
        *,
        platform: tuple[str, str] = PLATFORMS[0],
        docker: bool = False,
        label: str = "",
    ) -> BuiltImage:
        """An image manifest with a config and the given layers; `label` makes configs differ."""
        built = [self.layer(spec, docker=docker) for spec in layers]
        os_name, architecture = platform
        config = {
            "architecture": architecture,
            "os": os_name,
            "config": {"Labels": {"replicator.test": label or (tag or "untagged")}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in built]},
        }
        config_desc = self.add_blob(canonical_json(config), DOCKER_CONFIG if docker else OCI_CONFIG)
        blobs = [desc for desc, _ in built]
        media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
        return self._image_manifest(config_desc, blobs, tag, media_type=media_type)

    def _image_manifest(
        self,
        config: Descriptor,
        layers: Sequence[Descriptor],
        tag: str | None,
        *,
        media_type: str = OCI_MANIFEST,
        **fields: Any,
    ) -> BuiltImage:
        """Write the image manifest of `config` and `layers` (with more `fields`: an
        artifactType, a subject), tagged `tag` if given; the image built."""
        manifest = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": config.to_json(),
            "layers": [layer.to_json() for layer in layers],
            **fields,
        }
        descriptor = self.add_manifest(manifest, tag)
        return BuiltImage(
            tag=tag,
            digest=descriptor.digest,
            media_type=media_type,
            size=descriptor.size,
            config_digest=config.digest,
            layer_digests=tuple(layer.digest for layer in layers),
        )

    def siblings(self, prefix: str, count: int, *, first_seed: int) -> list[BuiltImage]:
        """`count` small images tagged `<prefix>0`..: one 4 KiB base layer they all share and a
        2 KiB layer of their own each (seeded from `first_seed`), as a burst of pushes of one
        project's builds is."""
        return [
            self.image(
                f"{prefix}{n}",
                [LayerSpec(SHARED_BASE_SEED, 4 * KIB), LayerSpec(first_seed + n, 2 * KIB)],
            )
            for n in range(count)
        ]

    def multi_platform(
        self,
        tag: str,
        layers: list[LayerSpec],
        *,
        docker: bool = False,
        label: str = "",
        per_platform: int = 1,
    ) -> BuiltImage:
        """A two-platform index (linux/amd64 + linux/arm64); the arm64 child gets its own
        `per_platform` top layers (seed + 1_000_000) so the children differ by more than
        their configs."""
        children = []
        entries = []
        for number, platform in enumerate(PLATFORMS):
            child_layers = list(layers)
            if number:
                for position in range(max(0, len(child_layers) - per_platform), len(child_layers)):
                    old = child_layers[position]
                    child_layers[position] = LayerSpec(
                        old.seed + 1_000_000, old.size, old.compressed
                    )
            child = self.image(
                None,
                child_layers,
                platform=platform,
                docker=docker,
                label=f"{label or tag}-{number}",
            )
            children.append(child)
            entry = Descriptor(child.media_type, child.digest, child.size).to_json()
            entry["platform"] = {"os": platform[0], "architecture": platform[1]}
            entries.append(entry)
        index = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST_LIST if docker else OCI_INDEX,
            "manifests": entries,
        }
        descriptor = self.add_manifest(index, tag)
        return BuiltImage(
            tag=tag,
            digest=descriptor.digest,
            media_type=descriptor.media_type,
            size=descriptor.size,
            children=tuple(children),
        )

    def cosign_signature(self, subject: BuiltImage, *, reference: str) -> BuiltImage:
        """A cosign-style signature of subject, tagged `sha256-<hex>.sig`."""
        payload = {
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": subject.digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
        fake_signature = base64.b64encode(hashlib.sha256(subject.digest.encode()).digest())
        layer = self.add_blob(
            canonical_json(payload),
            COSIGN_SIMPLESIGNING,
            annotations={"dev.cosignproject.cosign/signature": fake_signature.decode()},
        )
        config = {
            "architecture": "",
            "os": "",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        }
        config_desc = self.add_blob(canonical_json(config), OCI_CONFIG)
        return self._image_manifest(config_desc, [layer], signature_tag(subject.digest))

    def referrer(self, subject: BuiltImage, *, seed: int = 0) -> BuiltImage:
        """An OCI 1.1 artifact (an SBOM) whose `subject` is the given manifest, untagged."""
        empty = self.add_blob(b"{}", OCI_EMPTY)
        sbom = {"spdxVersion": "SPDX-2.3", "name": f"sbom-{seed}", "subject": subject.digest}
        layer = self.add_blob(canonical_json(sbom), SBOM_ARTIFACT_TYPE)
        of = Descriptor(subject.media_type, subject.digest, subject.size).to_json()
        return self._image_manifest(
            empty, [layer], None, artifactType=SBOM_ARTIFACT_TYPE, subject=of
        )

    def referrers_index(self, subject: BuiltImage, referrers: list[BuiltImage]) -> BuiltImage:
        """The fallback referrers index of subject, tagged `sha256-<hex>` (OCI 1.1 tag schema),
        as a client writes it to a registry without the referrers API."""
        entries = []
        for referrer in referrers:
            entry = Descriptor(referrer.media_type, referrer.digest, referrer.size).to_json()
            entry["artifactType"] = SBOM_ARTIFACT_TYPE
            entries.append(entry)
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        tag = referrers_tag(subject.digest)
        descriptor = self.add_manifest(index, tag)
        return BuiltImage(
            tag=tag,
            digest=descriptor.digest,
            media_type=OCI_INDEX,
            size=descriptor.size,
            children=tuple(referrers),
        )


def big_blob_layout(path: Path, tag: str, size: int, *, seed: int = 7) -> BuiltImage:
    """A one-layer image whose (uncompressed tar) layer is `size` bytes, written in chunks so
    that building a 1 GiB blob does not hold it in memory."""
    layout = OCILayout(path)
    chunk = 8 * 1024 * 1024  # 8 MiB: large writes, bounded memory
    rng = random.Random(seed)
    tmp = path / "blobs" / "sha256" / "partial"
    hasher = hashlib.sha256()
    written = 0
    with tmp.open("wb") as out:
        while written < size:
            data = rng.randbytes(min(chunk, size - written))
            out.write(data)
            hasher.update(data)
            written += len(data)
    digest = f"sha256:{hasher.hexdigest()}"
    tmp.rename(tmp.with_name(digest.split(":", 1)[1]))
    # Not a tar: the registry stores opaque bytes; the config's diff_id is the same digest.
    layer = Descriptor(OCI_LAYER_TAR, digest, size)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [digest]},
    }
    config_desc = layout.add_blob(canonical_json(config), OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc.to_json(),
        "layers": [layer.to_json()],
    }
    descriptor = layout.add_manifest(manifest, tag)
    return BuiltImage(
        tag=tag,
        digest=descriptor.digest,
        media_type=OCI_MANIFEST,
        size=descriptor.size,
        config_digest=config_desc.digest,
        layer_digests=(digest,),
    )
