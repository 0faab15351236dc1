"""The benchmark corpus: many repositories sharing base layers, some multi-platform.

Full size (issue 2): 20 repositories x 2 tags, 4 layers of 4 MiB per image, the first 2 layers
shared by every image, every 4th repository a two-platform index whose children have distinct
top layers: about 420 MB of distinct blobs. Deterministic: same shape, same digests.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support import skopeo
from tests.support.images import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    BuiltImage,
    LayerSpec,
    OCILayout,
)

MIB = 1024 * 1024
# skopeo pushes run this many at once: enough to keep the 2 cores busy while one waits on I/O.
PUSH_PARALLELISM = 4
# A loaded docker-registry now and then answers a concurrent blob check 500 (seen: "trying to
# reuse blob ... 500"); a push is idempotent, so the seeding tries again rather than failing
# a run of several minutes.
PUSH_ATTEMPTS = 3
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])


@dataclass(frozen=True)
class CorpusShape:
    """How big a corpus is."""

    repositories: int
    tags: int
    layers: int
    layer_size: int
    shared_layers: int
    index_every: int
    prefix: str = "corpus"


FULL = CorpusShape(
    repositories=20, tags=2, layers=4, layer_size=4 * MIB, shared_layers=2, index_every=4
)
QUICK = CorpusShape(
    repositories=4, tags=2, layers=4, layer_size=256 * 1024, shared_layers=2, index_every=4
)


@dataclass(frozen=True)
class Corpus:
    """A built corpus: the layout and every image by (repository, tag)."""

    shape: CorpusShape
    layout: Path
    images: dict[tuple[str, str], BuiltImage]

    @property
    def unique_bytes(self) -> int:
        """Bytes of distinct blobs: what a copy must move at least once."""
        digests: set[str] = set()
        for image in self.images.values():
            digests |= image.blob_digests
        return sum(
            (self.layout / "blobs" / "sha256" / d.split(":", 1)[1]).stat().st_size for d in digests
        )

    def distinct_blobs(self) -> list[tuple[str, str, int]]:
        """Each distinct blob once, as (a repository holding it, digest, size), sorted."""
        found: dict[str, tuple[str, str, int]] = {}
        for (repository, _tag), image in sorted(self.images.items()):
            for digest in sorted(image.blob_digests - found.keys()):
                path = self.layout / "blobs" / "sha256" / digest.split(":", 1)[1]
                found[digest] = (repository, digest, path.stat().st_size)
        return sorted(found.values())

    @property
    def repositories(self) -> list[str]:
        """Repository names, sorted."""
        return sorted({repository for repository, _ in self.images})


def build_corpus(shape: CorpusShape, workdir: Path) -> Corpus:
    """Write the corpus as one OCI layout with a unique layout tag per image."""
    layout = OCILayout(workdir / "layout")
    shared = [LayerSpec(seed=seed, size=shape.layer_size) for seed in range(shape.shared_layers)]
    images: dict[tuple[str, str], BuiltImage] = {}
    for number in range(shape.repositories):
        repository = f"{shape.prefix}/app{number:02d}"
        for tag_number in range(shape.tags):
            seed = 1000 + (number * shape.tags + tag_number) * shape.layers
            own = [
                LayerSpec(seed=seed + position, size=shape.layer_size)
                for position in range(shape.layers - shape.shared_layers)
            ]
            layout_tag = f"app{number:02d}-v{tag_number}"
            if number % shape.index_every == shape.index_every - 1:
                image = layout.multi_platform(layout_tag, [*shared, *own], per_platform=len(own))
            else:
                image = layout.image(layout_tag, [*shared, *own])
            images[(repository, f"v{tag_number}")] = image
    return Corpus(shape, layout.path, images)


def push_corpus(corpus: Corpus, registry_host: str) -> None:
    """Push every image with skopeo (digests preserved), a few at a time."""

    def push(item: tuple[tuple[str, str], BuiltImage]) -> None:
        (repository, tag), image = item
        assert image.tag is not None
        for attempt in range(1, PUSH_ATTEMPTS + 1):
            try:
                skopeo.push_layout(
                    corpus.layout, image.tag, f"{registry_host}/{repository}:{tag}", timeout=600
                )
                return
            except skopeo.SkopeoError:
                if attempt == PUSH_ATTEMPTS:
                    raise

    # The shared layers go first, alone, so the parallel pushes find them present.
    items = sorted(corpus.images.items())
    push(items[0])
    with ThreadPoolExecutor(PUSH_PARALLELISM) as pool:
        list(pool.map(push, items[1:]))


def verify_copy(corpus: Corpus, registry_url: str) -> list[str]:
    """Problems found at a destination: a tag missing or with another digest, a child
    manifest missing. Empty = every digest equal."""
    problems = []
    with httpx.Client(base_url=registry_url, headers={"Accept": MANIFEST_ACCEPT}) as client:
        for (repository, tag), image in sorted(corpus.images.items()):
            answer = client.head(f"/v2/{repository}/manifests/{tag}")
            digest = answer.headers.get("docker-content-digest")
            if answer.status_code != 200 or digest != image.digest:
                problems.append(f"{repository}:{tag}: {answer.status_code} {digest}")
            for child in image.children:
                found = client.head(f"/v2/{repository}/manifests/{child.digest}")
                if found.status_code != 200:
                    problems.append(f"{repository}@{child.digest}: {found.status_code}")
    return problems


def verify_blobs(blobs: list[tuple[str, str, int]], registry_url: str) -> list[str]:
    """Problems found at a destination of the blob-only floor: a blob missing or of another
    size. Empty = every blob there."""
    problems = []
    with httpx.Client(base_url=registry_url) as client:
        for repository, digest, size in blobs:
            answer = client.head(f"/v2/{repository}/blobs/{digest}")
            length = answer.headers.get("content-length")
            if answer.status_code != 200 or length != str(size):
                problems.append(f"{repository}@{digest}: {answer.status_code} {length}")
    return problems
