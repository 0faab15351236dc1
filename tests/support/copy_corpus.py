"""The images the copy tests read: built once per session and pushed to one source registry.

team/app         v1, v2 (shared base layers); v1 has a cosign `.sig` tag and an OCI
                 referrer (SBOM) listed in the `sha256-<v1 hex>` referrers tag
team/multi       1.0 = two-platform OCI index (linux/amd64 + linux/arm64)
team/docker      1.0 = Docker schema 2 image
team/dockerlist  1.0 = Docker manifest list of two schema 2 images
team/base-a      1 ; team/base-b 1 = two images sharing the base layers (mount test)
other/outside    1 = outside the `team` prefix
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from tests.support import skopeo
from tests.support.images import BuiltImage, LayerSpec, OCILayout
from tests.support.layout_push import push_over_http
from tests.support.registry_server import Registry

# Base layers large enough that a re-upload shows in bytes_copied next to the small top layers.
BASE_LAYERS = (LayerSpec(seed=1, size=512 * 1024), LayerSpec(seed=2, size=256 * 1024))
TOP_LAYER_SIZE = 64 * 1024


def top(seed: int) -> LayerSpec:
    """A small image-specific top layer."""
    return LayerSpec(seed=seed, size=TOP_LAYER_SIZE)


@dataclass(frozen=True)
class CopyCorpus:
    """The source registry and what it holds, by repository and tag."""

    registry: Registry
    layout: Path
    images: dict[str, dict[str, BuiltImage]]
    signature: BuiltImage
    referrer: BuiltImage
    referrers_index: BuiltImage

    def ref(self, repository: str, tag: str | None = None) -> str:
        """`host/repo[:tag]` at the source."""
        return f"{self.registry.host}/{repository}" + (f":{tag}" if tag else "")

    def tags(self, repository: str) -> dict[str, str]:
        """tag -> manifest digest of every tag of a repository at the source."""
        return {tag: image.digest for tag, image in self.images[repository].items()}

    def blob_size(self, digest: str) -> int:
        """Size in bytes of a blob of the corpus."""
        return (self.layout / "blobs" / "sha256" / digest.split(":", 1)[1]).stat().st_size

    def unique_blob_bytes(self, repositories: list[str]) -> int:
        """Bytes of the distinct blobs of the given repositories: the most a copy may send."""
        digests: set[str] = set()
        for repository in repositories:
            for image in self.images[repository].values():
                digests |= image.blob_digests
        return sum(self.blob_size(digest) for digest in digests)

    def repositories(self, prefix: str = "") -> list[str]:
        """The repositories under prefix (`team` matches `team/...`), sorted."""
        return sorted(
            name for name in self.images if not prefix or name.startswith(prefix.rstrip("/") + "/")
        )


def build_copy_corpus(registry: Registry, workdir: Path) -> CopyCorpus:
    """Build the layouts and push every image of the corpus to registry."""
    layout = OCILayout(workdir / "corpus-layout")
    base = list(BASE_LAYERS)
    images: dict[str, dict[str, BuiltImage]] = {}

    def push(repository: str, tag: str, image: BuiltImage, *, http: bool = False) -> BuiltImage:
        """Push the layout's `image.tag` as repository:tag (layout tags are unique names)."""
        assert image.tag is not None
        if http:
            push_over_http(layout.path, image.tag, registry.url, repository, as_tag=tag)
        else:
            skopeo.push_layout(layout.path, image.tag, f"{registry.host}/{repository}:{tag}")
        pushed = replace(image, tag=tag)
        images.setdefault(repository, {})[tag] = pushed
        return pushed

    v1 = push("team/app", "v1", layout.image("app-v1", [*base, top(101)]))
    push("team/app", "v2", layout.image("app-v2", [*base, top(102)]))
    signature = layout.cosign_signature(v1, reference=f"{registry.host}/team/app")
    assert signature.tag is not None
    push("team/app", signature.tag, signature)
    referrer = layout.referrer(v1)
    fallback = layout.referrers_index(v1, [referrer])
    assert fallback.tag is not None
    push("team/app", fallback.tag, fallback, http=True)
    push("team/multi", "1.0", layout.multi_platform("multi", [*base, top(201)]))
    push("team/docker", "1.0", layout.image("dk", [*base, top(301)], docker=True), http=True)
    dockerlist = layout.multi_platform("dkl", [*base, top(401)], docker=True)
    push("team/dockerlist", "1.0", dockerlist, http=True)
    push("team/base-a", "1", layout.image("base-a", [*base, top(501)]))
    push("team/base-b", "1", layout.image("base-b", [*base, top(502)]))
    push("other/outside", "1", layout.image("outside", [*base, top(601)]))
    return CopyCorpus(registry, layout.path, images, signature, referrer, fallback)
